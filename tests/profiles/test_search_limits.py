"""POST /similar with method multi_query runs one HNSW search per seed: seeds × n is capped by
API_MAX_SEARCH_ROWS, refused up front with a 400 naming n and the limit (before any search runs)."""

import pytest

pytestmark = pytest.mark.django_db


def test_multi_query_work_is_capped_by_seeds_times_n(make_api_client, settings):
    settings.API_MAX_SEARCH_ROWS = 20_000
    client = make_api_client("similarity:read")
    seeds = [f"{i:064x}" for i in range(1_000)]

    refused = client.post("/api/v1/similar", {"seed_keys": seeds, "n": 1_000, "method": "multi_query"}, format="json")
    within = client.post("/api/v1/similar", {"seed_keys": seeds[:20], "n": 1_000, "method": "multi_query"},
                         format="json")
    centroid = client.post("/api/v1/similar", {"seed_keys": seeds, "n": 1_000, "method": "centroid"}, format="json")

    assert refused.status_code == 400
    assert "API_MAX_SEARCH_ROWS" in refused.json()["n"][0] and "1000 × 1000" in refused.json()["n"][0]
    # within the cap the request goes on to the search (and fails only because no seed has a profile)
    assert within.status_code == 400 and "seed_keys" in within.json()
    assert centroid.status_code == 400 and "seed_keys" in centroid.json()  # one search: no cap
