"""MovieLens in both layouts: ratings, customers with attributes, items with titles and genres."""

import pytest

from ingestion.models import Customer, Event, EventType, Item
from ingestion.import_jobs import import_job_create, import_job_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_movielens_atomic_files_import_ratings_users_and_items(datasets):
    job = import_job_run(job_id=import_job_create(path=datasets / "ml-100k", fmt="movielens").pk)

    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (100_000, 100_000, 0)
    assert Event.objects.filter(event_type=EventType.RATING).count() == 100_000
    assert Customer.objects.count() == 943
    assert Customer.objects.filter(age__isnull=False).exclude(gender="").count() == 943
    assert Item.objects.count() == 1_682
    toy_story = Item.objects.get(sku="ml-1")
    assert toy_story.title == "Toy Story"
    assert toy_story.attributes["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy_story.category_path == "Movies/Animation"
    ratings = Event.objects.filter(item=toy_story).values_list("rating", flat=True)
    assert set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0} and len(ratings) > 400

    again = import_job_run(job_id=import_job_create(path=datasets / "ml-100k", fmt="movielens").pk)
    assert (again.rows_inserted, again.rows_duplicate) == (0, 100_000)
    assert Customer.objects.count() == 943 and Item.objects.count() == 1_682


def test_movielens_original_layout_u_data_u_user_u_item(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t5\t881250950\n1\t20\t3\t881250951\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = ["0"] * 19
    genres[1] = genres[5] = "1"  # Action, Comedy
    (tmp_path / "u.item").write_bytes(
        ("10|Caf\xe9 Movie (1995)|01-Jan-1995||http://x|" + "|".join(genres) + "\n"
         "20|Other (1996)|01-Jan-1996||http://y|" + "|".join(["0"] * 18 + ["1"]) + "\n").encode("latin-1")
    )

    job = import_job_run(job_id=import_job_create(path=tmp_path, fmt="movielens").pk)

    assert (job.rows_inserted, job.rows_rejected) == (3, 0)
    item = Item.objects.get(sku="ml-10")
    assert item.title == "Café Movie (1995)"
    assert item.attributes == {"genres": ["Action", "Comedy"], "release_year": 1995}
    assert Item.objects.get(sku="ml-20").attributes["genres"] == ["Western"]
    female = Customer.objects.get(gender="female")
    assert (female.age, female.age_band, female.region, female.attributes) == (53, "45-54", "US-9", {"occupation": "other"})
