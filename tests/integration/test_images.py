"""`mtls-harness images build`: images FROM scratch out of the binaries installed here, checked by running them

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_images.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.images.build import ldd
from harness.images.resolve import local_image_tag, pod_imports, pod_packages
from harness.runtime.binaries import find_envoy, find_nginx
from tests.unit.test_images import REPO, _run_in, built, client


@pytest.mark.mtls_needs_docker
def test_envoy_image_runs_the_same_envoy_as_this_machine(client, built) -> None:
    host = subprocess.run([str(find_envoy()), "--version"], capture_output=True, text=True, check=True).stdout
    code, out = _run_in(client, built["envoy"].tag, ["envoy", "--version"])
    assert code == 0, out
    # Envoy prints its argv[0] first: compare what follows "version:" (commit, version, build type, TLS library)
    assert out.split("version:")[1].strip() == host.split("version:")[1].strip()


@pytest.mark.mtls_needs_docker
def test_nginx_image_runs_the_same_nginx_build_and_loads_the_stream_module(client, built) -> None:
    host = subprocess.run([str(find_nginx()), "-V"], capture_output=True, text=True, check=True).stderr
    code, out = _run_in(client, built["nginx"].tag, ["nginx", "-V"])
    assert code == 0, out
    assert out.strip() == host.strip()
    module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    if Path(module).is_file():  # Debian's nginx-light + libnginx-mod-stream
        code, out = _run_in(client, built["nginx"].tag, ["nginx", "-t", "-g", f"load_module {module};"])
        assert code == 0, out


@pytest.mark.mtls_needs_docker
def test_images_are_tagged_with_the_component_version(built) -> None:
    envoy = subprocess.run([str(find_envoy()), "--version"], capture_output=True, text=True, check=True).stdout
    nginx = subprocess.run([str(find_nginx()), "-v"], capture_output=True, text=True, check=True).stderr
    assert built["envoy"].tag.split(":")[1].removesuffix("-local") in envoy
    assert f"nginx/{built['nginx'].tag.split(':')[1].removesuffix('-local')}" in nginx
    assert built["pod"].tag == local_image_tag("pod")


def test_pod_packages_are_exactly_what_the_pod_loads_outside_the_stdlib(tmp_path: Path) -> None:
    """Run the pod's document builder for real (with a client cert, which loads its lazy imports) and the probe
    runner's HTTP/2 exchange (the containers target's probe container runs it from the pod image): every non-stdlib
    module they loaded lives in a package the images copy and the target mounts, and the source scan found nothing
    that did not load (the pod image stays small)."""
    from harness.model.topology import default_pki_plan
    from harness.pki.certset import cert_set_for

    der_source = cert_set_for(default_pki_plan()).leaf("apim-client").chain
    script = f"""
import json, ssl, sys
from harness.pod.echo import echo_document
pem = open({str(der_source)!r}).read()
der = ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25])
echo_document(method="GET", path="/", headers=[], tls={{}}, peer_der=der, body=b"")
# the probe runner the containers target runs from the pod image: an HTTP/2 exchange loads h2 (lazily)
import socket
from harness.isolation import runner
from harness.probe.http import Request, exchange_h2
mine, theirs = socket.socketpair()
theirs.close()
try:
    exchange_h2(mine, lambda: 1.0, Request("GET", "/", "x", {{}}, b""), state={{}})
except Exception:
    pass
std = set(sys.stdlib_module_names)
third = {{n: m.__file__ for n, m in sys.modules.items()
         if n.split(".")[0] not in std and getattr(m, "__file__", None)}}
print(json.dumps({{"files": sorted(third.values()), "tops": sorted({{n.split(".")[0] for n in third}})}}))
"""
    out = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    loaded = [Path(f).resolve() for f in seen["files"]]
    roots = list(pod_packages().values())
    missing = [f for f in loaded if not any(f == r or f.is_relative_to(r) for r in roots)]
    assert missing == []
    # and nothing the pod never loads: every third-party import the source scan found did load at run time
    assert pod_imports() <= set(seen["tops"]), (pod_imports(), seen["tops"])


def test_ldd_finds_the_c_library_and_the_loader_of_nginx() -> None:
    libs = ldd(find_nginx())
    names = {p.name for p in libs}
    assert "libc.so.6" in names
    assert any(n.startswith("ld-linux") for n in names)
    assert all(p.is_absolute() and p.exists() for p in libs)


def test_images_build_without_a_docker_engine_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    out = subprocess.run([sys.executable, "-m", "harness", "images", "build", "--only", "nginx"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mtls-harness: error: a running Docker engine not found"), lines
    assert "no-docker.sock" in lines[0]
    assert "Traceback" not in out.stderr
