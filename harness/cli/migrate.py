"""``mtls-harness migrate --to gateway-api[:envoy-gateway] [--chain FILE] [--resources FILE]``: the chain's Ingresses
as Gateway API resources — or YOUR resources — and the ledger of what the migration keeps, changes and loses.

    mtls-harness migrate --chain chain.yaml --to gateway-api:envoy-gateway --out gateway-api/
    mtls-harness migrate --chain chain.yaml --to gateway-api --resources ingress2gateway-out.yaml
    mtls-harness migrate --to gateway-api --json

Without ``--resources`` it writes ``DIR/gateway-api.yaml`` (the Gateway, its HTTPRoutes, the BackendTLSPolicies and the
CA ConfigMaps they name; Secrets are referenced by name, never copied). With ``--resources`` it writes nothing and
assesses the resources given (written by you, or by ingress2gateway). Either way it prints one line per security
property: kept, changed (how) or lost, with the source of both sides. Then (unless ``--no-run``) it runs
the same probes against the chain's ingress-nginx and against the resources as Envoy Gateway's data plane, both real,
and prints what each answered and the verdict (:mod:`harness.cases.migration`). Exit 1 when a property is lost in the
ledger or in the measurements, 0 otherwise, 2 for bad input (one line). ``--catalogue DIR`` runs the whole case
catalogue on both kinds — with ``--resources``, on YOUR resources — and compares them case by case
(docs/gateway-api.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.options import add_chain_option, chain_path, load_chain_option
from harness.errors import UsageError

__all__ = ["register"]

OUTPUT = "gateway-api.yaml"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "migrate", help="your Ingresses as Gateway API resources, and what the migration keeps, changes and loses",
        description="Write the Gateway API resources equivalent to your chain's Ingresses and annotations "
                    "(--chain FILE, else $MTLS_HARNESS_CHAIN, else the reference chain) and print, per security "
                    "property, whether the migration keeps it, changes it or loses it, with sources. Exit 1 when "
                    "a property is lost. Then (unless --no-run) the same probes run against both, real nginx and "
                    "real Envoy; --catalogue runs the whole case catalogue on both.",
        epilog="examples:\n  mtls-harness migrate --chain chain.yaml --to gateway-api:envoy-gateway --out gw/\n"
               "  mtls-harness migrate --to gateway-api --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chain_option(p)
    p.add_argument("--to", required=True, metavar="gateway-api[:IMPL]",
                   help="the ingress to migrate to: gateway-api (Envoy Gateway), gateway-api:envoy-gateway, or "
                        "gateway-api:agc (Application Gateway for Containers' FrontendTLSPolicy and BackendTLSPolicy)")
    p.add_argument("--out", type=Path, default=Path("gateway-api"), metavar="DIR",
                   help=f"where {OUTPUT} is written (default: ./gateway-api)")
    p.add_argument("--force", action="store_true", help=f"replace an existing DIR/{OUTPUT}")
    p.add_argument("--resources", type=Path, action="append", metavar="FILE",
                   help="assess these Gateway API resources (YAML; repeatable) instead of writing them: yours, or "
                        "what ingress2gateway wrote")
    p.add_argument("--no-run", action="store_true",
                   help="only the ledger: do not run the probes against both ingresses (needs nginx and Envoy)")
    p.add_argument("--json", action="store_true", help="print the ledger and the measurements as one JSON document")
    p.add_argument("--check-schemas", action="store_true",
                   help="check the resources against the pinned Gateway API v1.5.1 CRD schemas before anything runs "
                        "(fetched once into the cache and checked by sha256; --crds DIR or "
                        "$MTLS_HARNESS_GATEWAY_API_CRDS: a folder with them); exit 2 when one does not pass")
    p.add_argument("--crds", type=Path, metavar="DIR", default=None,
                   help="with --check-schemas: the folder holding the pinned CRD files (no download)")
    p.add_argument("--catalogue", type=Path, metavar="DIR", default=None,
                   help="also run the whole case catalogue on both ingress kinds — your ingress-nginx, then the "
                        "migrated Gateway API (with --resources: yours) — with their reports in DIR/ingress-nginx "
                        "and DIR/gateway-api, and print per case: kept, changed (the same refusal, said the "
                        "implementation's way), lost (a finding or a named gap only on Gateway API; with --resources "
                        "a case your resources fail) or not comparable (ingress-nginx only)")
    p.set_defaults(func=cmd_migrate)


def _implementation(value: str) -> str:
    kind, _, impl = value.partition(":")
    if kind != "gateway-api":
        raise UsageError(f"--to {value}: the only migration is to gateway-api — use --to gateway-api, "
                         "--to gateway-api:envoy-gateway or --to gateway-api:agc")
    return impl or "envoy-gateway"


def cmd_migrate(args: argparse.Namespace) -> int:
    import yaml

    from harness.pki.x509 import write_atomic
    from harness.render.gateway_api import translate

    implementation = _implementation(args.to)
    target = Path(args.out) / OUTPUT
    resources = _read_resources(args.resources) if args.resources else None
    if resources is None and target.exists() and not args.force:
        raise UsageError(f"--out {args.out}: {target} exists — pass --force to replace it, or another --out")
    loaded = load_chain_option(args)
    if loaded is not None:
        topology, certs = loaded.topology, loaded.certs
    else:
        from harness.model.topology import default_topology
        from harness.pki.certset import cert_set_for

        topology = default_topology()
        certs = cert_set_for(topology.pki)
    translation = translate(topology, certs, implementation=implementation, resources=resources)
    if args.check_schemas or args.crds is not None:
        _check_schemas(translation.documents, args.crds)
    if resources is None:
        text = ("# Written by mtls-harness migrate from the chain's Ingresses (docs/gateway-api.md). The Secrets are "
                "referenced by name, as they are in the cluster.\n"
                + yaml.safe_dump_all(translation.documents, sort_keys=False, width=120))
        write_atomic(target, text.encode())
    measured = [] if args.no_run else _measure(topology, certs, translation.documents)
    compared = _catalogues(args, implementation) if args.catalogue is not None else []
    counts = {v: sum(1 for p in translation.ledger if p.verdict == v) for v in ("kept", "changed", "lost")}
    measured_counts = {v: sum(1 for o in measured if o.verdict == v) for v in ("kept", "changed", "lost")}
    if args.json:
        print(json.dumps({"schema": "mtls-harness/migrate/1", "to": f"gateway-api:{implementation}",
                          "chain": topology.name, "written": None if resources is not None else str(target),
                          "assessed": [str(f) for f in args.resources or []], "counts": counts,
                          "ledger": [p.as_dict() for p in translation.ledger],
                          "measured": [o.as_dict() for o in measured] if not args.no_run else None,
                          "measured_counts": measured_counts if not args.no_run else None}, indent=2))
    else:
        width = max((len(p.name) for p in translation.ledger), default=0)
        for p in translation.ledger:
            print(f"{p.verdict.upper():<7} {p.name:<{width}}  {p.host}: {p.ingress} → {p.gateway}")
            print(f"{'':<8}{'':<{width}}  source: {p.source}")
        if resources is None:
            print(f"wrote {target} ({len(translation.documents)} resources for gateway-api:{implementation})")
        else:
            print(f"assessed {len(translation.documents)} resources from {', '.join(map(str, args.resources))}")
        if measured:
            print("measured — the same probes against the chain's ingress-nginx and its Gateway API twin:")
            pwidth = max(len(o.property) for o in measured)
            for o in measured:
                print(f"{o.verdict.upper():<7} {o.property:<{pwidth}}  {o.probe}: ingress-nginx {o.nginx} → "
                      f"Gateway API {o.gateway}")
        print(f"migration ledger: {counts['kept']} kept, {counts['changed']} changed, {counts['lost']} lost"
              + (f"; measured: {measured_counts['kept']} kept, {measured_counts['changed']} changed, "
                 f"{measured_counts['lost']} lost" if measured else " (not measured)"),
              file=sys.stderr if counts["lost"] or measured_counts["lost"] else sys.stdout)
    # a case lost in the migration, or one that failed on either kind (the chain or its twin did not behave as its
    # configuration says: its report tells why)
    catalogue_lost = sum(1 for row in compared if row[1] in ("lost", "failed"))
    if compared and not args.json:
        for case_id, verdict, why in compared:
            if verdict != "kept":
                print(f"{verdict.upper():<14} {case_id}: {why}")
        tally = {v: sum(1 for r in compared if r[1] == v)
                 for v in ("kept", "changed", "lost", "not comparable", "failed")}
        print("catalogue on both kinds: " + ", ".join(f"{n} {v}" for v, n in tally.items()),
              file=sys.stderr if catalogue_lost else sys.stdout)
    elif compared:
        print(json.dumps({"catalogue": [{"case": c, "verdict": v, "why": w} for c, v, w in compared]}, indent=2))
    return 1 if counts["lost"] or measured_counts["lost"] or catalogue_lost else 0


def _check_schemas(documents: list[dict[str, Any]], crds: Path | None) -> None:
    """``--check-schemas``: every Gateway API document against the pinned CRDs (harness.render.gateway_api_crds),
    the core ones (ConfigMaps) against Kubernetes' own schemas when the kind extra is there. A problem is a
    :class:`UsageError` listing them all (exit 2, nothing written); a kind no pinned CRD covers is said, not failed."""
    from harness.render.gateway_api_crds import GATEWAY_API_VERSION, fetch_crds, validate_gateway_api

    directory = fetch_crds(crds, progress=lambda line: print(f"migrate: {line}", file=sys.stderr, flush=True))
    lines = validate_gateway_api(documents, directory)
    core = [d for d in documents if "/" not in str(d.get("apiVersion", ""))]
    if core:
        from harness.errors import MissingExtra
        from harness.render.k8s import validate_manifests

        try:
            lines += validate_manifests(core)
        except MissingExtra:
            lines.append(f"{len(core)} core object(s) (ConfigMaps) not checked — pip install 'mtls-harness[kind]' "
                         "checks them against Kubernetes' own schemas")
    problems = [ln for ln in lines if " not checked" not in ln]
    for line in lines:
        if line not in problems:
            print(f"migrate: {line}", file=sys.stderr)
    if problems:
        raise UsageError(f"{len(problems)} problem(s) against the Gateway API v{GATEWAY_API_VERSION} CRD schemas — "
                         "fix the resources:\n  " + "\n  ".join(problems))
    print(f"migrate: {len(documents) - len(lines)} of {len(documents)} resources pass their schemas (Gateway API "
          f"v{GATEWAY_API_VERSION} CRDs, unknown fields refused, CEL rules left to the API server"
          f"{'; ConfigMaps: Kubernetes own' if core else ''})", file=sys.stderr)


def _catalogues(args: argparse.Namespace, implementation: str) -> list[tuple[str, str, str]]:
    """Run the suite on both ingress kinds (subprocesses: each its own pytest session and chain) and compare their
    results.json per case (``--catalogue``)."""
    import subprocess

    from harness.cli.run import find_suite, pytest_argv
    from harness.report.results import RESULTS_FILE

    docs: dict[str, dict[str, Any]] = {}
    yours = [arg for f in args.resources or [] for arg in ("--mtls-gateway-resources", str(Path(f).resolve()))]
    for kind, name in (("ingress-nginx", "ingress-nginx"), (f"gateway-api:{implementation}", "gateway-api")):
        report = Path(args.catalogue) / name
        report.mkdir(parents=True, exist_ok=True)
        print(f"migrate: the catalogue on {kind}{' (your resources)' if yours and name == 'gateway-api' else ''} "
              f"(report: {report})", file=sys.stderr, flush=True)
        # the command line `mtls-harness run --ingress KIND --report DIR [--chain FILE]` gives pytest; with
        # --resources the Gateway API chain serves them (--mtls-gateway-resources)
        run = argparse.Namespace(target="local", workers=None, keyword=None, ingress=kind, chain=chain_path(args),
                                 pytest_args=yours if name == "gateway-api" else [])
        argv = [sys.executable, "-m", "pytest", *pytest_argv(run, find_suite(), report)]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False)
        try:
            docs[name] = json.loads((report / RESULTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = "\n".join(done.stdout.splitlines()[-15:])
            raise UsageError(f"--catalogue: the run on {kind} wrote no report (exit {done.returncode}):\n{tail}") \
                from None
    return compare_catalogues(docs["ingress-nginx"], docs["gateway-api"], yours=bool(yours))


def compare_catalogues(nginx: dict[str, Any], gateway: dict[str, Any], *,
                       yours: bool = False) -> list[tuple[str, str, str]]:
    """Per case of both reports: (id, kept | changed | lost | not comparable | failed, why). Lost: the Gateway API
    chain shows a FINDING the ingress-nginx chain does not, or a named gap — or, on ``yours`` (your own resources),
    FAILS a case ingress-nginx passes: your resources do not do what your Ingresses did; changed: both passed, each by
    its own expectation; failed: a case failed on either otherwise (the twin or the chain is wrong: its message)."""
    theirs = {c["id"]: c for c in gateway["cases"]}
    out: list[tuple[str, str, str]] = []
    for mine in nginx["cases"]:
        other = theirs.get(mine["id"])
        if other is None or (mine["result"] == "skipped" and other["result"] == "skipped"):
            continue
        first = (other.get("message") or "").splitlines()[0] if other.get("message") else ""
        if yours and other["result"] == "failed" and mine["result"] in ("passed", "finding"):
            seen = ((other.get("seen") or {}).get("outcome_text")) or "?"
            out.append((mine["id"], "lost", f"your resources: expected {other.get('expected')}, seen {seen}"))
        elif "failed" in (mine["result"], other["result"]):
            out.append((mine["id"], "failed", f"ingress-nginx {mine['result']}, Gateway API {other['result']}"))
        elif other["result"] == "skipped":
            verdict = "lost" if "Gateway API gap" in first else "not comparable"
            out.append((mine["id"], verdict, first.partition(": ")[2] or first))
        elif other["result"] == "finding" and mine["result"] != "finding":
            out.append((mine["id"], "lost", first))
        elif other.get("expected") != mine.get("expected"):
            out.append((mine["id"], "changed", f"{mine.get('expected')} → {other.get('expected')}"))
        else:
            out.append((mine["id"], "kept", ""))
    return out


def _measure(topology: Any, certs: Any, documents: list[dict[str, Any]]) -> list[Any]:
    """Both ingresses probed for real (harness.cases.migration), progress on stderr; a missing nginx or Envoy is one
    line with the install hint (ToolMissingError)."""
    from harness.cases.migration import measure
    from harness.runtime.binaries import find_envoy, find_nginx

    if topology.passthrough:
        print("migrate: not measured — the chain passes TLS through to the pod (ssl-passthrough): its Gateway API twin "
              "needs a TLS listener and a TLSRoute, which migrate does not write", file=sys.stderr)
        return []
    find_nginx()
    find_envoy()
    return measure(topology, certs, documents, progress=lambda line: print(line, file=sys.stderr))


def _read_resources(paths: list[Path]) -> list[dict[str, Any]]:
    """The Kubernetes objects in ``paths`` (files or folders of multi-document YAML; a ``List`` is expanded)."""
    from harness.chainfile.k8s import read_gateway_api

    return read_gateway_api([(Path(p), "--resources") for p in paths])
