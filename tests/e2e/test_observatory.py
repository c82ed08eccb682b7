"""The MDN HTTP Observatory grades wardgate's default configuration A+ (over TLS, test CA trusted)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.conftest import SECRET
from tests.servers import service_missing, wardgate_process

SCANNER = Path(__file__).parent / "observatory" / "node_modules" / "@mdn" / "mdn-http-observatory"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA generated now, and a server certificate for localhost signed by it."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


def scan(host: str, ca: Path) -> dict[str, object]:
    """Run the scanner CLI (src/scan.js directly: the bin wrapper overrides NODE_EXTRA_CA_CERTS)."""
    if not (SCANNER / "src" / "scan.js").is_file():
        service_missing("the Observatory scanner", "run ./scripts/test, or ./scripts/setup-node")
    node = shutil.which("node")
    assert node, "node is required (Debian package nodejs)"
    result = subprocess.run(
        [node, str(SCANNER / "src" / "scan.js"), host],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NODE_EXTRA_CA_CERTS": str(ca), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.slow
def test_default_configuration_gets_a_plus_on_the_sign_in_page(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET}
    args = ("--ssl-certfile", str(tls_files["cert"]), "--ssl-keyfile", str(tls_files["key"]))
    with wardgate_process(
        env, *args, scheme="https", verify=ssl.create_default_context(cafile=tls_files["ca"])
    ) as base:
        report = scan(base.removeprefix("https://"), tls_files["ca"])
    summary = report.get("scan")
    assert isinstance(summary, dict), report
    failed = {name: test["result"] for name, test in report["tests"].items() if not test["pass"]}  # type: ignore[attr-defined]
    assert summary["grade"] == "A+", (summary, failed)
    assert failed == {}
    # `/` redirects a signed-out visitor to the sign-in page: the graded page is /auth (HTML policy).
    assert "script-src 'self'" in summary["responseHeaders"]["content-security-policy"]
