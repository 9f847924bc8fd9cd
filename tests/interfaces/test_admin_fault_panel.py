"""The dashboard's "Faults to handle" panel: dead-lettered tasks, imports with no heartbeat, privacy
requests whose execution died or failed five times, and refreshes waiting in the outbox, each counted
and each with what to do, in English and Chinese."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import ImportJob, ImportStatus, RefreshOutbox
from pipeline.services import dead_letter_record
from privacy.models import PrivacyRequest, RequestState
from profiles.models import BuildStatus, ProfileBuild
from training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def faults(settings):
    settings.IMPORT_STALE_SECONDS = 300
    settings.JOB_STUCK_MINUTES = 30
    dead_letter_record(task_id="t-1", task_name="profiles.tasks.profiles_refresh_task", args=[[1, 2]], kwargs={},
                       error="ValueError: invalid literal for int()", deliveries=5)
    now = timezone.now()
    stuck = ImportJob.objects.create(source="shop", format="csv", status=ImportStatus.RUNNING,
                                     heartbeat_at=now - timedelta(minutes=12))
    ImportJob.objects.create(source="shop", format="csv", status=ImportStatus.RUNNING, heartbeat_at=now)  # alive
    RefreshOutbox.objects.create(customer_ids=[1, 2, 3], attempts=2, last_error="ConnectionError")
    ProfileBuild.objects.create(status=BuildStatus.RUNNING, heartbeat_at=now - timedelta(minutes=45))
    ProfileBuild.objects.create(status=BuildStatus.RUNNING, heartbeat_at=now - timedelta(minutes=5))  # alive
    TrainingRun.objects.create(arch="gru", status=RunStatus.RUNNING, heartbeat_at=now - timedelta(hours=2))
    settings.PRIVACY_EXECUTION_STALE_SECONDS = 300
    PrivacyRequest.objects.create(kind="erasure", source="default", subject_token="t-dead", state=RequestState.EXECUTING,
                                  executed_at=now - timedelta(minutes=20), attempts=1)
    PrivacyRequest.objects.create(kind="erasure", source="default", subject_token="t-live", state=RequestState.EXECUTING,
                                  executed_at=now - timedelta(minutes=1), attempts=1)  # still running
    PrivacyRequest.objects.create(kind="erasure", source="default", subject_token="t-failed",
                                  state=RequestState.PARTIALLY_FAILED, attempts=5, error="OSError: disk went away")
    return stuck


def test_the_dashboard_lists_dead_letters_stuck_imports_and_the_outbox_with_what_to_do(admin_client, faults):
    text = admin_client.get("/admin/").content.decode()

    assert "Faults to handle" in text
    assert "Dead-lettered tasks</a>: 1" in text
    assert "profiles.tasks.profiles_refresh_task" in text and "ValueError: invalid literal for int()" in text
    assert "fix the cause" in text
    assert "Stuck imports</a>: 1" in text and f"#{faults.pk}</a>" in text
    assert "No progress for 5 minutes or more" in text
    assert "Stuck profile builds and training runs: 2" in text
    assert "profile build #" in text and "training run #" in text and "No chunk or epoch finished for 30 minutes" in text
    assert "Profile refreshes waiting for the broker</a>: 1" in text
    assert "up to 2 failed attempts" in text and "Check that Redis is running" in text
    assert "Stuck privacy requests</a>: 2" in text and "1 attempt<" in text and "5 attempts<" in text
    assert "executed again by Celery beat every 15 minutes" in text


def test_the_fault_panel_in_simplified_chinese(admin_client, faults):
    text = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert "待处理的故障" in text and "死信任务</a>: 1" in text and "卡住的导入</a>: 1" in text
    assert "卡住的画像构建和训练: 2" in text and "已有 30 分钟没有完成任何分块或训练轮次" in text
    assert "等待消息代理的画像刷新</a>: 1" in text and "请检查 Redis 是否在运行" in text
    assert "卡住的隐私请求</a>: 2" in text


def test_an_empty_fault_panel_says_zero_and_gives_no_instructions(admin_client):
    text = admin_client.get("/admin/").content.decode()

    assert "Dead-lettered tasks</a>: 0" in text and "Stuck imports</a>: 0" in text
    assert "Profile refreshes waiting for the broker</a>: 0" in text and "Stuck profile builds and training runs: 0" in text
    assert "Stuck privacy requests</a>: 0" in text and "executed again by Celery beat" not in text
    assert "fix the cause" not in text and "No progress for" not in text and "No chunk or epoch" not in text


def test_the_dead_letter_pages_open(admin_client, faults):
    assert admin_client.get("/admin/pipeline/deadletter/").status_code == 200
    assert admin_client.get("/admin/ingestion/refreshoutbox/").status_code == 200
