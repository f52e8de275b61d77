"""``mtls-harness certs``: generate cert sets and check them (or one certificate) statically.

    mtls-harness certs generate [DIR] [--key-type ecdsa|rsa] [--force]
    mtls-harness certs shadow DIR --identity NAME=CHAIN.pem [--key NAME=KEY.pem] [--trust NAME=CAS.pem] [--json]
    mtls-harness certs check SET_DIR [--min-days N] [--json] [--strict]
    mtls-harness certs check --chain FILE [SET_DIR] [--min-days N] [--json] [--strict]
    mtls-harness certs check FILE|SECRET_DIR --ca BUNDLE [--key KEY] [--crl CRL] [--hostname NAME]
                             [--role client|server] [--password PW] [--min-days N] [--json] [--strict]

Exit codes: 0 no error (warnings are shown), 1 an error finding (with ``--strict``: any error or warning), 2 unusable
input (one ``error:`` line naming the file, the problem and the fix).
``--json`` output never contains key material.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.options import add_chain_option, load_chain_option, print_help_for_no_action
from harness.errors import HarnessError, InputError, UsageError

if TYPE_CHECKING:  # imported where used: every command's start pays for this module (pydantic, cryptography)
    from harness.pki.certset import CertSet
    from harness.pki.check import CheckReport

__all__ = ["main", "register"]

_SINGLE_ONLY = ("ca", "key", "crl", "hostname", "role", "password")
_STYLE = {"error": "red", "warning": "yellow", "info": "dim"}


def register(subparsers: Any) -> None:
    """Add ``certs generate`` and ``certs check`` to the main CLI's subparsers."""
    certs = subparsers.add_parser("certs", help="generate cert sets and check certificates",
                                  description="Generate cert sets for the chain and check cert sets or single "
                                              "certificates (exit 0 no error, 1 an error finding, 2 unusable "
                                              "input).")
    sub = certs.add_subparsers(dest="certs_command", metavar="ACTION", parser_class=type(certs))
    certs.set_defaults(func=lambda _args: print_help_for_no_action(certs))

    gen = sub.add_parser("generate", help="generate a cert set (every CA and leaf of the default chain)",
                         description="Generate a cert set in DIR (default: the cache in the user's cache "
                                     "directory, e.g. ~/.cache/mtls-harness/cert-sets/; override with "
                                     "MTLS_HARNESS_CERT_CACHE). Keys are written 0600.")
    gen.add_argument("directory", nargs="?", type=Path, metavar="DIR", help="where to write the set")
    gen.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                     help="ECDSA P-256 (default, fast) or RSA 2048")
    gen.add_argument("--force", action="store_true", help="replace a set already in DIR")
    gen.set_defaults(func=cmd_generate)

    sh = sub.add_parser("shadow", help="stand-ins for your certificates from their public parts (a shadow set)",
                        description="Build a shadow cert set in DIR from public certificates: same subjects, SANs, "
                                    "EKUs, key types and sizes, validity, depth and trust, harness-made keys (0600). "
                                    "An identity whose --key is given keeps its real certificate when every "
                                    "identity under its root has one. See fixtures/certs/README.md.")
    sh.add_argument("directory", type=Path, metavar="DIR", help="where to write the set (empty, or a set made here)")
    sh.add_argument("--identity", action="append", default=[], metavar="NAME=CHAIN.pem",
                    help="a server or client identity: its PEM chain, leaf first (repeat for each)")
    sh.add_argument("--key", action="append", default=[], metavar="NAME=KEY.pem",
                    help="that identity's private key, to use its real certificate (a test environment)")
    sh.add_argument("--trust", action="append", default=[], metavar="NAME=CAS.pem",
                    help="a trust list: the CA certificates a hop trusts (repeat for each)")
    sh.add_argument("--json", action="store_true", help="print mode per identity and CA per trust list as JSON")
    sh.set_defaults(func=cmd_shadow)

    chk = sub.add_parser("check", help="check a cert set directory, or one certificate against --ca",
                         description="Check a cert set (PATH = a set directory) against the default topology (with "
                                     "--chain: against your chain's names and trust relations; without PATH, your "
                                     "chain's own certificates), or one certificate (PATH = a PEM file, a .pfx/.p12, "
                                     "or a Kubernetes secret directory with tls.crt/tls.key/ca.crt) against --ca.")
    chk.add_argument("path", type=Path, metavar="PATH", nargs="?")
    add_chain_option(chk)
    chk.add_argument("--min-days", type=int, default=30, metavar="N",
                     help="days of validity a cert should have left: fewer is an expires-soon warning (default: 30)")
    chk.add_argument("--json", action="store_true", help="print the report as JSON (no key material)")
    chk.add_argument("--strict", action="store_true",
                     help="fail (exit 1) on warnings too, e.g. pkilint findings and expires-soon (default: only "
                          "errors, the findings that break a handshake or the chain's trust, fail)")
    single = chk.add_argument_group("single certificate")
    single.add_argument("--ca", type=Path, metavar="BUNDLE", help="the trust anchor(s) its consumer uses (PEM)")
    single.add_argument("--key", type=Path, metavar="KEY", help="its private key (PEM), to check they match")
    single.add_argument("--crl", type=Path, action="append", metavar="CRL", help="a CRL to check revocation against")
    single.add_argument("--hostname", action="append", metavar="NAME", help="a name its SANs must cover")
    single.add_argument("--role", choices=("client", "server"), help="how it is used (default: from --hostname/EKU)")
    single.add_argument("--password", metavar="PW", help="password of a .pfx/.p12 (or of an encrypted --key)")
    chk.set_defaults(func=cmd_check)



# ---------------------------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from harness.model.topology import default_pki_plan
    from harness.pki.certset import cert_set_for, generate_cert_set

    plan = default_pki_plan(args.key_type)
    t0 = time.perf_counter()
    if args.directory is not None:
        cs = generate_cert_set(plan, args.directory, force=args.force)
    elif args.force:
        from harness.pki.cache import cache_root
        from harness.pki.certset import plan_digest

        cs = generate_cert_set(plan, cache_root() / plan_digest(plan), force=True)
    else:
        cs = cert_set_for(plan)
    _print_set(cs, time.perf_counter() - t0)
    return 0


def _console() -> Any:
    """A rich console; when output is not a terminal (a pipe, a CI log) it is 200 columns wide instead of 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _print_set(cs: CertSet, seconds: float) -> None:
    from rich.table import Table

    table = Table(title=f"cert set in {cs.directory} ({cs.plan.key_type}, {seconds * 1000:.0f} ms)")
    for col in ("name", "kind", "subject", "issuer", "files"):
        table.add_column(col, overflow="fold")
    for ca in cs.plan.cas:
        table.add_row(ca.name, "root CA" if ca.parent is None else f"intermediate under {ca.parent}",
                      ca.common_name, ca.parent or "(self)", str(cs.ca_cert(ca.name).parent))
    for lf in cs.plan.leaves:
        files = cs.leaf(lf.name)
        table.add_row(lf.name, f"{lf.usage} leaf", files.subject, files.issuer, str(files.cert.parent))
    _console().print(table)


def _pairs(values: Sequence[str], option: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"{option} {value!r}: give NAME=FILE, e.g. {option} apim-client=apim-client.pem")
        out[name] = Path(path)
    return out


def cmd_shadow(args: argparse.Namespace) -> int:
    from harness.pki.load import read_pem_certs
    from harness.pki.shadow import IdentityInput, TrustInput, build_cert_set

    chains, keys, trusts = (_pairs(args.identity, "--identity"), _pairs(args.key, "--key"),
                            _pairs(args.trust, "--trust"))
    if not chains and not trusts:
        raise UsageError("certs shadow: give at least one --identity NAME=CHAIN.pem or --trust NAME=CAS.pem")
    for name in keys.keys() - chains.keys():
        raise UsageError(f"--key {name}=…: no --identity {name}=CHAIN.pem to go with it")
    t0 = time.perf_counter()
    result = build_cert_set(
        [IdentityInput(n, tuple(read_pem_certs(p, "certificate chain")), keys.get(n)) for n, p in chains.items()],
        [TrustInput(n, tuple(read_pem_certs(p, "CA bundle"))) for n, p in trusts.items()], args.directory)
    if args.json:
        bundles = {n: str(result.certs.trust_bundle(ca)) for n, ca in result.trust.items()}
        print(json.dumps({"directory": str(result.certs.directory), "mode": dict(result.mode),
                          "trust": dict(result.trust), "bundles": bundles}, indent=2))
        return 0
    _print_set(result.certs, time.perf_counter() - t0)
    for name, mode in result.mode.items():
        print(f"{name}: {mode}")
    for name, ca in result.trust.items():
        print(f"trust {name}: CA {ca} ({result.certs.trust_bundle(ca)})")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from harness.chainfile.certs import ChainCertSet
    from harness.pki.certset import load_cert_set
    from harness.pki.check import check_cert_set
    from harness.pki.load import is_k8s_secret_dir

    if args.min_days < 0:
        raise UsageError(f"--min-days {args.min_days}: must be 0 or more")
    loaded = load_chain_option(args)
    if loaded is not None and (args.path is None or (args.path.is_dir() and not is_k8s_secret_dir(args.path))):
        given = [f"--{o}" for o in _SINGLE_ONLY if getattr(args, o) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to a single certificate, not to a chain (drop them)")
        if args.path is None and isinstance(loaded.certs, ChainCertSet):  # the user's own certificates
            from harness.chainfile.check import check_chain_certs

            report = check_chain_certs(loaded.certs, loaded.topology, min_days=args.min_days)
        else:  # a set directory, checked against the chain's names and trust relations
            cs = loaded.certs if args.path is None else load_cert_set(args.path)
            report = check_cert_set(cs, loaded.topology, min_days=args.min_days)
        what = f"{loaded.path}" if args.path is None else f"{args.path} (chain {loaded.path})"
        if args.json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            _print_report(report, what, strict=args.strict)
        return 0 if (report.clean if args.strict else report.ok) else 1
    if args.path is None:
        raise UsageError("certs check: give PATH (a cert set, or a certificate with --ca), or --chain FILE")
    path: Path = args.path
    if not path.exists():
        raise InputError(path, "does not exist", "pass a cert-set directory, or a certificate file with --ca")
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(path, "is an empty directory",
                         "pass a cert-set directory (`mtls-harness certs generate DIR` makes one)")
    if path.is_dir() and not is_k8s_secret_dir(path):
        given = [f"--{o}" for o in _SINGLE_ONLY if getattr(args, o) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to a single certificate, but {path} is a cert-set directory "
                             "(drop them, or pass the certificate file)")
        report = check_cert_set(load_cert_set(path), min_days=args.min_days)
    else:
        report = _check_single(path, args)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report, str(path), strict=args.strict)
    return 0 if (report.clean if args.strict else report.ok) else 1


def _check_single(path: Path, args: argparse.Namespace) -> CheckReport:
    from harness.pki.check import CheckReport, Finding, check_ca_bundle, check_identity
    from harness.pki.load import load_identity, load_k8s_secret, read_crl, read_pem_certs

    secret_findings: list[Finding] = []
    if path.is_dir():  # a Kubernetes secret
        secret = load_k8s_secret(path)
        if secret.ca_crt_error:
            secret_findings.append(Finding("secret-ca-malformed", "error",
                                           f"ca.crt {secret.ca_crt_error}: ingress-nginx fails closed "
                                           "(return 403 for the host)"))
        if not secret.tls_crt:  # a CA secret (auth-tls-secret): check the CA certs themselves
            report = check_ca_bundle(secret.ca_crt, source=str(path / "ca.crt"), min_days=args.min_days)
            return CheckReport(report.rows, report.min_days, report.notes, tuple(secret_findings))
    if args.ca is None:
        raise InputError(path, "is a single certificate and no trust anchor was given",
                         "pass --ca BUNDLE: the root CA file its consumer trusts")
    trust = read_pem_certs(args.ca, "CA bundle")
    if args.key is not None and not args.key.exists():
        raise InputError(args.key, "does not exist", "check the path given to --key")
    ident = load_identity(path, key_path=args.key, password=args.password)
    crls = [read_crl(p) for p in args.crl or ()]
    report = check_identity(ident, trust=trust, trust_label=args.ca.name, role=args.role,
                            hostnames=args.hostname or (), crls=crls, min_days=args.min_days)
    return CheckReport(report.rows, report.min_days, report.notes, tuple(secret_findings))


def _print_report(report: CheckReport, what: str, *, strict: bool = False) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()
    table = Table(title=f"certs check {what}", show_lines=True)
    for col in ("role", "name", "subject", "issuer", "SANs", "not after", "days left", "findings"):
        table.add_column(col, overflow="fold")
    for row in report.rows:
        findings = Text()
        for f in row.findings:
            findings.append(f"{f.severity} {f.code}: {f.message}\n", style=_STYLE[f.severity])
        if row.clean:
            findings.append("ok", style="green")
        days = Text(str(row.days_left), style="red" if row.days_left < report.min_days else "")
        table.add_row(row.role, row.name, row.subject, row.issuer, "\n".join(row.sans),
                      f"{row.not_after:%Y-%m-%d}", days, findings)
    console.print(table)
    for f in report.findings:
        console.print(Text(f"{f.severity} {f.code}: {f.message}", style=_STYLE[f.severity]))
    for note in report.notes:
        console.print(Text(note, style="dim"))
    errors, warnings = report.count("error"), report.count("warning")
    failed = not (report.clean if strict else report.ok)
    if not errors and not warnings:
        verdict = "clean"
    else:
        verdict = f"{errors} error(s), {warnings} warning(s)"
        verdict += ": FAIL" if failed else " (warnings do not fail without --strict)" if warnings else ""
    console.print(Text(verdict, style="red" if failed else "yellow" if warnings else "green"))


# ---------------------------------------------------------------------------------------------------------------
# stand-alone entry point (the main CLI registers the same commands)
# ---------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``certs`` commands on their own: ``main(["check", "DIR"])``. Same exit codes as ``mtls-harness certs``."""
    parser = argparse.ArgumentParser(prog="mtls-harness")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["certs", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args))
    except HarnessError as exc:
        print(f"mtls-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
