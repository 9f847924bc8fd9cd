"""Data-parallel training (training/ml/distributed.py) with real processes: two ranks started by
torchrun on this host (loopback c10d rendezvous, gloo), on a small synthetic sequence set, no
database. Both ranks hold the same parameters after a step and at the end; the loss curve is the
one-process run's with the same global batch; a checkpoint made under either world size resumes
under the other.

Tolerance: the two runs compute the same sums in a different order (two half-batch gradients
all-reduced, against one full-batch gradient), so they differ by float32 rounding, about 1e-7
relative per operation (float32's epsilon), which Adam carries through the epochs. Measured
(2026-12-01): the loss curves agree to 1.2e-8 relative and the weights to 1.2e-7 absolute after 3
epochs. The test allows 1e-6 relative on the losses (eight times float32's epsilon, about a
hundred times what was measured) and 1e-5 on the weights, and checks that the gap between two
global batch sizes (what splitting the batch wrongly would show) is far above that: 6e-2."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.ml import data
from training.ml.config import EncoderConfig, TrainConfig
from training.ml.trainer import LAST, train

N_ITEMS = 30
# dropout 0: the two runs draw different dropout masks (distributed.epoch_seed), which is right for
# training but leaves nothing to compare exactly; auxiliary heads on: both loss terms are split
SETTINGS = {"epochs": 3, "batch_size": 32, "lr": 5e-3, "patience": 10, "seed": 3}
WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parents[2]
TOLERANCE = 1e-6


def shop(customers: int = 90, length: int = 12, seed: int = 0) -> data.Sequences:
    """Customers walk the catalogue in steps of +1 from a random start, now and then with an event
    without an item (a page view), so the item and next-event counts of a batch differ."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        start = rng.integers(1, N_ITEMS + 1)
        for t in range(length + int(rng.integers(0, 30))):  # some histories longer than the window
            rows.append((c, (start - 1 + t) % N_ITEMS + 1, 1, t * 3600 + c, 10.0 + t))
            if rng.random() < 0.2:
                rows.append((c, 0, 2, t * 3600 + c + 1, np.nan))
    arr = np.array(rows, dtype="float64")
    return data.sequences_build(
        customers=arr[:, 0].astype("int64"), items=arr[:, 1].astype("int64"), event_types=arr[:, 2].astype("int64"),
        times=arr[:, 3], values=arr[:, 4],
    )


def model_config() -> EncoderConfig:
    return EncoderConfig(arch="gru", n_items=N_ITEMS, dim=16, layers=1, heads=2, max_len=10, dropout=0.0,
                         aux_weight=0.5)


def parameters(model: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.state_dict().values()]).numpy()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(launcher: list[str], worker_args: list[str], tmp_path: Path, name: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo",
               TORCH_CPP_LOG_LEVEL="ERROR")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher, str(WORKER), *worker_args],
                            cwd=ROOT, env=env, stdout=open(tmp_path / f"{name}.log", "wb"), stderr=subprocess.STDOUT)


def _finish(processes: list[subprocess.Popen], tmp_path: Path, deadline_s: float = 45) -> None:
    end = time.monotonic() + deadline_s
    try:
        for process in processes:
            process.wait(timeout=max(end - time.monotonic(), 1))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
    assert all(p.returncode == 0 for p in processes), logs


def _one_process(tmp_path: Path):
    """The reference run, a run of twice the batch (what the tolerance must separate), and a
    one-process checkpoint after epoch 0 for the two ranks to resume."""
    seqs = shop()
    split = data.leave_one_out(seqs)
    reference = train(seqs=seqs, split=split, model_config=model_config(), train_config=TrainConfig(**SETTINGS))
    doubled = train(seqs=seqs, split=split, model_config=model_config(),
                    train_config=TrainConfig(**{**SETTINGS, "batch_size": 2 * SETTINGS["batch_size"]}))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(seqs=seqs, split=split, model_config=model_config(), train_config=TrainConfig(**SETTINGS),
              checkpoint_dir=tmp_path / "made-by-1", crash_after_epoch=0)
    return seqs, split, reference, doubled


def test_two_ranks_train_as_one_process_with_the_same_global_batch_and_resume_across_world_sizes(tmp_path):
    torch.set_num_threads(1)
    port = _free_port()
    # given: two nodes of one process each, rendezvous on loopback, and the one-process runs
    launcher = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"ddp-test-{port}", "--max-restarts", "0",
                "--local-addr", "127.0.0.1"]
    args = ["--out", str(tmp_path / "out"), "--crash-dir", str(tmp_path / "made-by-2"),
            "--resume-dir", str(tmp_path / "made-by-1")]
    seqs, split, reference, doubled = _one_process(tmp_path)  # first: the ranks resume made-by-1
    nodes = [_torchrun([*launcher, "--node-rank", str(node)], args, tmp_path, f"node{node}") for node in (0, 1)]
    _finish(nodes, tmp_path)
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]

    # then: the same parameters on both ranks, after one optimizer step and at the end (bit for bit:
    # the gradients are all-reduced, so both ranks take the same step)
    assert [r["world"] for r in ranks] == [2, 2]
    assert np.array_equal(ranks[0]["one_step"], ranks[1]["one_step"])
    assert np.array_equal(ranks[0]["full"]["params"], ranks[1]["full"]["params"])
    assert np.array_equal(ranks[0]["full"]["epoch0"], ranks[1]["full"]["epoch0"])
    # the loss curve, the validation metrics and the weights of one process with the same global batch
    curve = [h["loss"] for h in reference.history]
    two = ranks[0]["full"]["loss"]
    assert two == pytest.approx(curve, rel=TOLERANCE)
    gap = max(abs(a - b) / b for a, b in zip([h["loss"] for h in doubled.history], curve, strict=True))
    assert gap > 1000 * TOLERANCE  # a wrong global batch would not pass
    assert ranks[0]["full"]["valid"] == [h["valid"] for h in reference.history]  # same ranks → same metrics
    assert np.allclose(ranks[0]["full"]["params"], parameters(reference.model), rtol=0, atol=1e-5)

    # a one-process checkpoint (epoch 0) resumed by the two ranks continues the reference run
    assert ranks[0]["resume"]["from"] == 0
    assert ranks[0]["resume"]["loss"] == pytest.approx(curve, rel=TOLERANCE)
    assert np.allclose(ranks[0]["resume"]["params"], parameters(reference.model), rtol=0, atol=1e-5)

    # a two-rank checkpoint (rank 0 wrote it, the unwrapped module's weights) resumed by one process
    assert "simulated crash after epoch 0" in ranks[0]["crashed"] and (tmp_path / "made-by-2" / LAST).exists()
    saved = torch.load(tmp_path / "made-by-2" / LAST, weights_only=True)
    assert not any(k.startswith("module.") for k in saved["state_dict"])
    resumed = train(seqs=seqs, split=split, model_config=model_config(), train_config=TrainConfig(**SETTINGS),
                    checkpoint_dir=tmp_path / "made-by-2")
    assert resumed.resumed_from_epoch == 0
    assert [h["loss"] for h in resumed.history] == pytest.approx(curve, rel=TOLERANCE)
    assert np.allclose(parameters(resumed.model), parameters(reference.model), rtol=0, atol=1e-5)


@pytest.mark.django_db(transaction=True)
def test_the_training_task_launches_two_ranks_and_rank_0_alone_writes_the_registry(settings, tmp_path, make_shop):
    from celery import current_app

    from ingestion.models import Item
    from profiles.models import Profile
    from training.models import ItemEmbedding, ModelVersion, RunStatus
    from training.services import training_run_create
    from training.tasks import training_run_task

    # given: a small shop and a run, the task set to train with two processes
    settings.MODELS_DIR = tmp_path / "models"
    settings.TRAINING_WORLD_SIZE = 2
    make_shop(customers=120, events=5_000, seed=11)
    run = training_run_create(arch="gru", config={"model": {"layers": 1, "max_len": 20, "content": False},
                                                  "train": {"epochs": 2, "batch_size": 128}})

    # when: the Celery task runs (called here, no worker); it launches torchrun, which runs
    # `manage.py train --run-id` in two processes
    outcome = training_run_task(run.pk)
    current_app.control.purge()  # the profile build it queued: no worker here to take it

    # then: trained by two ranks, recorded once, by rank 0
    run.refresh_from_db()
    assert outcome == {"run_id": run.pk, "status": RunStatus.SUCCEEDED} and run.status == RunStatus.SUCCEEDED
    assert [h["epoch"] for h in run.history] == [0, 1] and {h["ranks"] for h in run.history} == {2}
    version = ModelVersion.objects.get(run=run)
    assert version.is_active and version.gate["passed"] and ModelVersion.objects.count() == 1
    saved = torch.load(version.artifact_path, weights_only=True)
    assert saved["state_dict"] and not any(k.startswith("module.") for k in saved["state_dict"])
    assert [p.name for p in Path(version.artifact_path).parent.iterdir() if p.suffix == ".tmp"] == []
    # the vectors, written once: one per vocabulary item, every profiled customer under this version
    assert ItemEmbedding.objects.filter(model_version=version).count() == len(version.item_ids) <= Item.objects.count()
    embedded = Profile.objects.exclude(embedding=None)
    assert embedded.count() == run.dataset["customers"] > 0
    assert set(embedded.values_list("model_version", flat=True)) == {version.pk}

    # and a second delivery of the task (acks_late) finds the run done and launches nothing
    assert training_run_task(run.pk) is None


def test_ranks_that_finish_a_run_exit_cleanly_every_time(tmp_path):
    """gloo's worker threads free a finished collective's tensors after the caller's wait has
    returned, and need the GIL for it; a rank already in interpreter shutdown then aborts (SIGABRT,
    "terminate called without an active exception"; CI lost a two-rank training run to it).
    Ranks end through distributed.end_rank, which exits without that shutdown. Measured
    (2026-12-03) with the teardown worker's --interpreter-exit (how ranks ended before): 17 of 96
    ranks aborted; with end_rank 0 of 48. Eight launches (16 ranks) show the old ending at that
    rate 96 times in 100."""
    worker = WORKER.with_name("distributed_teardown_worker.py")
    exits = []
    for launch in range(8):
        port = _free_port()
        ranks = [subprocess.Popen([sys.executable, str(worker)], cwd=ROOT,
                                  env=dict(os.environ, OMP_NUM_THREADS="1", WORLD_SIZE="2", RANK=str(rank),
                                           LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                                           GLOO_SOCKET_IFNAME="lo", TORCH_CPP_LOG_LEVEL="ERROR"),
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{launch}-{rank}.log", "wb"))
                 for rank in range(2)]
        exits += [(launch, rank.wait(timeout=60)) for rank in ranks]

    failed = [(launch, code) for launch, code in exits if code != 0]
    assert failed == [], "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("*.log")))


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_world_size_that_is_not_a_positive_whole_number_stops_start_up_naming_it(value):
    environment = dict(os.environ, TRAINING_WORLD_SIZE=value, DJANGO_SETTINGS_MODULE="config.settings")

    started = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=environment,
                             capture_output=True, text=True, timeout=60)

    assert started.returncode != 0
    assert f"TRAINING_WORLD_SIZE must be a whole number of processes, at least 1, not {value!r}" in started.stderr


@pytest.mark.django_db(transaction=True)
def test_a_run_that_rank_0_refuses_is_recorded_failed_and_the_task_fails(settings, tmp_path, make_shop):
    from training.models import ModelVersion, RunStatus, TrainingRun
    from training.tasks import training_run_task

    # given: a run whose configuration rank 0 refuses once it has claimed the run and read the events
    settings.MODELS_DIR = tmp_path / "models"
    settings.TRAINING_WORLD_SIZE = 2
    make_shop(customers=40, events=800, seed=2, profiles=False)
    run = TrainingRun.objects.create(arch="gru", config={"train": {"schedule": "sometimes"}})

    # when: two ranks are launched for it
    with pytest.raises(RuntimeError, match="2-process launch exited with status"):
        training_run_task(run.pk)

    # then: rank 0's error is on the run (not replaced by the launch's exit status), and no version
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "schedule must be one of" in run.error
    assert not ModelVersion.objects.exists()
