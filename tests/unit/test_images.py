"""`mtls-harness images build`: images FROM scratch out of the binaries installed here, checked by running them.

Expected values come from the components themselves (the host's `envoy --version`, `nginx -V`, the Python that runs
these tests), never from the code under test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from docker.errors import APIError

from harness.errors import ToolMissingError
from harness.images.build import build_images
from harness.images.resolve import LABEL_ROLE, docker_client, resolve_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    c = docker_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def built(client):
    """Every image, built once for this module (a rebuild of unchanged files is mostly the engine's cache)."""
    return {b.role: b for b in build_images(progress=lambda line: None, client=client)}


def _run_in(client, image: str, command: list[str]) -> tuple[int, str]:
    container = client.containers.create(image, command, network_mode="none", labels={LABEL_ROLE: "test"})
    try:
        container.start()
        code = container.wait(timeout=60)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.mark.mtls_needs_docker
def test_pod_image_runs_this_python_with_the_harness_and_the_pods_imports(client, built) -> None:
    script = "import sys, harness.pod.echo, cryptography.x509; print(sys.version)"
    code, out = _run_in(client, built["pod"].tag, ["python3", "-c", script])
    assert code == 0, out
    assert out.strip() == sys.version.strip()


@pytest.mark.mtls_needs_docker
def test_images_are_one_layer_from_scratch_without_a_shell(client, built) -> None:
    for b in built.values():
        image = client.images.get(b.tag)
        assert len(image.attrs["RootFS"]["Layers"]) == 1, (b.tag, image.attrs["RootFS"])
        assert image.labels[LABEL_ROLE] == b.role
        assert b.size_bytes == image.attrs["Size"]
        with pytest.raises(APIError, match=r"(?i)executable file not found|no such file"):
            _run_in(client, b.tag, ["/bin/sh", "-c", "true"])


@pytest.mark.mtls_needs_docker
def test_a_missing_official_image_falls_back_to_the_local_build(client, built) -> None:
    from docker.errors import ImageNotFound

    official = "envoyproxy/envoy:v" + built["envoy"].tag.split(":")[1].removesuffix("-local")
    try:
        client.images.get(official)
    except ImageNotFound:
        pass
    else:
        pytest.skip(f"{official} is present here; the fallback is not exercised")
    # no registry answers here, so the pull fails and the image `images build` made is used
    assert resolve_image(client, "envoy") == built["envoy"].tag


@pytest.mark.mtls_needs_docker
def test_an_official_image_present_locally_is_preferred(client, built, monkeypatch) -> None:
    import secrets

    import harness.images.resolve

    # a private name stands in for the official one, so parallel tests resolving nginx:1.22 are not disturbed
    official = f"mtls-harness-test/official-nginx:{secrets.token_hex(4)}"
    monkeypatch.setattr(harness.images.resolve, "official_image", lambda role: official)
    repo, tag = official.split(":")
    assert client.images.get(built["nginx"].tag).tag(repo, tag=tag)
    try:
        assert resolve_image(client, "nginx") == official
    finally:
        client.images.remove(official)
    assert client.images.get(built["nginx"].tag)  # the local build is untouched


@pytest.mark.mtls_needs_docker
def test_an_explicit_image_that_is_missing_is_one_clear_error(client, monkeypatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_POD_IMAGE", "mtls-harness/no-such-image:0")
    with pytest.raises(ToolMissingError) as info:
        resolve_image(client, "pod")
    text = str(info.value)
    assert "mtls-harness/no-such-image:0" in text
    assert "could not be pulled" in text
    assert "MTLS_HARNESS_POD_IMAGE" in text
