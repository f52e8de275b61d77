"""Cert sets: every CA and leaf a :class:`~harness.model.topology.PKIPlan` names, as PEM files on disk, plus bad
variants.

    cs = cert_set_for(default_pki_plan())          # generated once, cached under cache_root()/<digest>/
    cs.leaf("apim-client").chain                   # leaf + intermediates: what a client presents
    cs.trust_bundle("apim-client-ca")              # the root above that CA: what the ingress trusts
    cs.fault("expired", like="apim-client")        # a bad variant, made on demand and cached on disk

On-disk layout (documented for users in fixtures/certs/README.md; :func:`load_cert_set` reads the same)::

    set.json                       the plan, the serials reserved for "revoked" variants, the earliest expiry
    cas/<ca>/cert.pem              the CA's own certificate
    cas/<ca>/key.pem               its private key (0600)
    cas/<ca>/crl.pem               a CRL it issued
    leaves/<leaf>/cert.pem         the leaf alone
    leaves/<leaf>/chain.pem        leaf + intermediates up to (not including) the root
    leaves/<leaf>/key.pem          its private key (0600)
    faults/<leaf>~<fault>/...      a fault variant: cert.pem, chain.pem, key.pem (+ ca.pem / intermediates.pem)
    bundles/<root>[+<root>].pem    trust-anchor files, written on demand

Whole sets and fault variants are built in a private temp directory and renamed into place, so a reader never sees
half a set, and two pytest-xdist workers asking for the same one at once both end up with the same files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import InputError
from harness.model.topology import CASpec, KeyType, LeafSpec, PKIPlan
from harness.pki.cache import cache_root
from harness.pki.faults import FAULTS, Fault, build_fault
from harness.pki.x509 import (
    PrivateKey,
    Signed,
    cert_pem,
    fingerprint_sha256,
    issue_ca,
    issue_leaf,
    key_pem,
    make_crl,
    new_key,
    now,
    write_atomic,
)

__all__ = [
    "FAULTS",
    "CertSet",
    "Fault",
    "LeafFiles",
    "Supplied",
    "cert_set_for",
    "generate_cert_set",
    "leaf_files_in",
    "load_cert_set",
    "plan_digest",
    "set_is_complete",
    "write_trust_bundle",
]

#: bump when the layout or the certificate profile changes: cached sets with another format are regenerated
FORMAT = 2
#: a cached set is regenerated when a leaf or CRL would expire within this many days (so `certs check` stays clean)
REFRESH_DAYS = 60


@dataclass(frozen=True)
class Supplied:
    """A certificate the user supplies for a plan name (with its chain's own key where a leaf needs one)."""

    cert: x509.Certificate
    key: PrivateKey | None = None  # a leaf's private key; a CA's only when it issues here (a stable shadow CA)


@dataclass(frozen=True)
class LeafFiles:
    name: str  # leaf name from the PKIPlan, or "<like>~<fault>" for a fault variant
    cert: Path  # the leaf alone (PEM)
    chain: Path  # leaf + intermediates up to (not incl.) the root: what a server serves / a client presents
    key: Path  # PEM private key, file mode 0600
    fingerprint_sha256: str  # lower-case hex, no colons, of the leaf's DER
    subject: str  # RFC 4514 string
    issuer: str
    serial: int


# ---------------------------------------------------------------------------------------------------------------
# the plan on disk
# ---------------------------------------------------------------------------------------------------------------
_OPTIONAL = ("subject", "ekus", "key_type", "key_size", "not_before", "not_after", "path_length")


def _spec_to_json(spec: CASpec | LeafSpec) -> dict[str, Any]:
    """A spec as JSON; the optional profile overrides only when set (so a plan without them keeps its digest)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in _OPTIONAL and value is None:
            continue
        out[f.name] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


def _spec_args(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key in ("not_before", "not_after"):
        if out.get(key) is not None:
            out[key] = dt.datetime.fromisoformat(out[key])
    for key in ("sans", "ekus"):
        if out.get(key) is not None:
            out[key] = tuple(out[key])
    return out


def _plan_to_json(plan: PKIPlan) -> dict[str, Any]:
    return {"cas": [_spec_to_json(c) for c in plan.cas], "leaves": [_spec_to_json(lf) for lf in plan.leaves],
            "key_type": plan.key_type}


def _plan_from_json(data: Mapping[str, Any]) -> PKIPlan:
    cas = tuple(CASpec(**_spec_args(c)) for c in data["cas"])
    leaves = tuple(LeafSpec(**_spec_args(lf)) for lf in data["leaves"])
    return PKIPlan(cas=cas, leaves=leaves, key_type=data.get("key_type", "ecdsa"))


def plan_digest(plan: PKIPlan) -> str:
    """A short stable digest of the plan (and the set format): the cache directory name."""
    blob = json.dumps({"format": FORMAT, "plan": _plan_to_json(plan)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_plan(plan: PKIPlan) -> None:
    names = [c.name for c in plan.cas] + [lf.name for lf in plan.leaves]
    for n in names:
        if not n or "/" in n or "~" in n or "+" in n or n.startswith("."):
            raise ValueError(f"PKI plan name {n!r} cannot be a file name: use letters, digits, '-' and '_'")
    if len(set(names)) != len(names):
        raise ValueError("PKI plan names must be unique across CAs and leaves")
    for c in plan.cas:
        plan.root_of(c.name)  # KeyError on an unknown parent
        seen, cur = {c.name}, c
        while cur.parent is not None:
            cur = plan.ca(cur.parent)
            if cur.name in seen:
                raise ValueError(f"PKI plan: CA {c.name!r} has a parent cycle")
            seen.add(cur.name)
    for lf in plan.leaves:
        plan.ca(lf.issuer)


def _path_length(plan: PKIPlan, ca: CASpec) -> int | None:
    """Roots: unlimited. Intermediates: exactly as deep as the plan needs (0 for an issuing CA). A spec's own
    ``path_length`` wins (-1: no limit)."""
    if ca.path_length is not None:
        return None if ca.path_length < 0 else ca.path_length
    if ca.parent is None:
        return None
    children = [c for c in plan.cas if c.parent == ca.name]
    return 0 if not children else 1 + max(_path_length(plan, c) or 0 for c in children)


def _ca_line(plan: PKIPlan, name: str) -> list[str]:
    """``name`` and its ancestors, nearest first, root last."""
    out = [name]
    while (parent := plan.ca(out[-1]).parent) is not None:
        out.append(parent)
    return out


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------
def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` with ``mode`` from the start (a key is never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_leaf_dir(d: Path, leaf: x509.Certificate, chain: tuple[x509.Certificate, ...], key: Signed) -> None:
    _write(d / "cert.pem", cert_pem(leaf))
    _write(d / "chain.pem", cert_pem(*chain))
    _write(d / "key.pem", key_pem(key.key), 0o600)


def _install(tmp: Path, target: Path, *, replace: bool) -> bool:
    """Rename the finished ``tmp`` directory to ``target``. False (and ``tmp`` removed) when another process
    installed ``target`` first; with ``replace`` an existing ``target`` is swapped out."""
    aside: Path | None = None
    if replace and target.exists():
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            target.rename(aside)
        except FileNotFoundError:
            aside = None
    try:
        tmp.rename(target)  # atomic; replaces an empty directory, fails on a non-empty one
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def _subject(spec: CASpec | LeafSpec) -> x509.Name | None:
    return x509.Name.from_rfc4514_string(spec.subject) if spec.subject is not None else None


def _key_for(plan: PKIPlan, spec: CASpec | LeafSpec) -> PrivateKey:
    return new_key(spec.key_type or plan.key_type, size=spec.key_size)


def _build_set(plan: PKIPlan, d: Path, supplied: Mapping[str, Supplied] | None = None) -> None:
    """Write every CA (with its CRL) and leaf of ``plan`` into the empty directory ``d``. A name in ``supplied``
    is written from the given certificates (and key) instead of being generated: a CA supplied without its key gets
    no key file and no CRL; one supplied with its key issues its children and CRL like a generated one."""
    supplied = supplied or {}
    built: dict[str, Signed] = {n: Signed(s.cert, s.key) for n, s in supplied.items()
                                if s.key is not None and n in {c.name for c in plan.cas}}
    pending = [ca for ca in plan.cas if ca.name not in supplied]
    while pending:  # parents before children (the plan was checked for cycles)
        for ca in list(pending):
            if ca.parent is None or ca.parent in built:
                parent = built[ca.parent] if ca.parent else None
                built[ca.name] = issue_ca(ca.common_name, plan.key_type, parent=parent,
                                          path_length=_path_length(plan, ca), subject=_subject(ca),
                                          key=_key_for(plan, ca), not_before=ca.not_before, not_after=ca.not_after)
                pending.remove(ca)
            elif ca.parent in supplied:
                raise ValueError(f"CA {ca.name!r}: its parent {ca.parent!r} is supplied without a key, so it "
                                 "cannot be generated under it")
    cas = {n: s.cert for n, s in built.items()} | {n: s.cert for n, s in supplied.items() if n in
                                                   {c.name for c in plan.cas}}
    revoked = {lf.name: x509.random_serial_number() for lf in plan.leaves  # a serial for each CRL issued here
               if lf.name not in supplied or lf.issuer in built}
    expiry = min(c.not_valid_after_utc for c in cas.values())
    for ca in plan.cas:
        _write(d / "cas" / ca.name / "cert.pem", cert_pem(cas[ca.name]))
        if ca.name not in built:
            continue
        signed = built[ca.name]
        _write(d / "cas" / ca.name / "key.pem", key_pem(signed.key), 0o600)
        serials = tuple(revoked[lf.name] for lf in plan.leaves if lf.issuer == ca.name and lf.name in revoked)
        crl = make_crl(signed, serials)
        _write(d / "cas" / ca.name / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        if crl.next_update_utc is not None:
            expiry = min(expiry, crl.next_update_utc)
    for lf in plan.leaves:
        line = tuple(cas[n] for n in _ca_line(plan, lf.issuer)[:-1])
        given = supplied.get(lf.name)
        if given is not None:
            if given.key is None:
                raise ValueError(f"leaf {lf.name!r} is supplied without its private key")
            leaf = Signed(given.cert, given.key)
        else:
            eku_oids = tuple(x509.ObjectIdentifier(o) for o in lf.ekus) if lf.ekus is not None else None
            leaf = issue_leaf(built[lf.issuer], lf.common_name, lf.sans, (lf.usage,), plan.key_type,
                              organization=lf.organization, subject=_subject(lf), eku_oids=eku_oids,
                              key=_key_for(plan, lf), not_before=lf.not_before, not_after=lf.not_after,
                              exact_sans=lf.subject is not None)
        _write_leaf_dir(d / "leaves" / lf.name, leaf.cert, (leaf.cert, *line), leaf)
        expiry = min(expiry, leaf.cert.not_valid_after_utc)
    meta = {
        "format": FORMAT,
        "digest": plan_digest(plan),
        "plan": _plan_to_json(plan),
        "revoked_serials": {k: format(v, "x") for k, v in revoked.items()},
        "expires": expiry.isoformat(),
        "supplied": {n: fingerprint_sha256(s.cert) for n, s in sorted(supplied.items())},
    }
    _write(d / "set.json", json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")


def _new_tmp(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-"))
    tmp.chmod(0o755)  # the set's own directory; key files stay 0600
    return tmp


def generate_cert_set(plan: PKIPlan, directory: Path, *, force: bool = False,
                      supplied: Mapping[str, Supplied] | None = None) -> CertSet:
    """Generate every CA and leaf of ``plan`` into ``directory`` (absent or empty; ``force`` replaces a set).
    Names in ``supplied`` are written from the user's certificates instead (a CA without its key, a leaf with its
    key); :mod:`harness.pki.shadow` uses it where the user gives a key."""
    directory = Path(directory)
    _check_plan(plan)
    if directory.exists() and not directory.is_dir():
        raise InputError(directory, "is a file, not a directory", "choose a directory for the cert set")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InputError(directory, "already holds files", "pass --force to replace it, or choose an empty directory")
    tmp = _new_tmp(directory.parent, directory.name)
    try:
        _build_set(plan, tmp, supplied)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not _install(tmp, directory, replace=force):
        raise InputError(directory, "was filled by another process meanwhile", "pass --force to replace it")
    return load_cert_set(directory, plan)


# ---------------------------------------------------------------------------------------------------------------
# the set
# ---------------------------------------------------------------------------------------------------------------
class CertSet:
    """A cert set on disk. Names are the :class:`PKIPlan`'s; files are read lazily."""

    def __init__(self, directory: Path, plan: PKIPlan, revoked_serials: Mapping[str, int] | None = None) -> None:
        self.directory = Path(directory)
        self.plan = plan
        self._revoked = dict(revoked_serials or {})
        self._leaves: dict[str, LeafFiles] = {}

    def __repr__(self) -> str:
        return f"CertSet({str(self.directory)!r}, {len(self.plan.cas)} CAs, {len(self.plan.leaves)} leaves)"

    @property
    def revoked_serials(self) -> Mapping[str, int]:
        """Leaf name -> the serial its CA's CRL lists for the leaf's "revoked" fault variant."""
        return dict(self._revoked)

    # -- paths ---------------------------------------------------------------------------------------------------
    def leaf(self, name: str) -> LeafFiles:
        """A plan leaf by name; ``"<like>~<fault>"`` names a fault variant (made on demand)."""
        if "~" in name:
            like, _, kind = name.partition("~")
            if kind not in FAULTS:
                raise KeyError(f"no fault {kind!r} (known: {', '.join(FAULTS)})")
            return self.fault(kind, like)
        if name not in self._leaves:
            self.plan.leaf(name)  # KeyError naming the known leaves
            self._leaves[name] = leaf_files_in(name, self.directory / "leaves" / name)
        return self._leaves[name]

    def ca_cert(self, ca_name: str) -> Path:
        """That CA's own certificate (root or intermediate)."""
        self.plan.ca(ca_name)
        return _need(self.directory / "cas" / ca_name / "cert.pem", "the CA certificate")

    def ca_key(self, ca_name: str) -> Path:
        """That CA's private key (generated sets always have one; user-supplied sets may not)."""
        self.plan.ca(ca_name)
        return _need(self.directory / "cas" / ca_name / "key.pem", "the CA private key")

    def crl(self, ca_name: str) -> Path:
        """A PEM CRL issued by that CA; it lists the serial of every "revoked" fault variant the CA issues."""
        self.plan.ca(ca_name)
        return _need(self.directory / "cas" / ca_name / "crl.pem", "the CA's CRL")

    def crl_chain(self, ca_name: str) -> bytes:
        """The CRLs of that CA and of every CA above it, nearest first: what a verifier that checks revocation of
        the whole chain needs (nginx's ``ssl_crl`` sets X509_V_FLAG_CRL_CHECK_ALL, so a leaf under an intermediate
        without the root's CRL fails with ``unable to get certificate CRL``; measured, docs/behaviour.md)."""
        return b"".join(self.crl(n).read_bytes() for n in self.chain_cas(ca_name))

    def trust_bundle(self, *ca_names: str) -> Path:
        """A PEM file with the roots above those CAs (each once, in order): a trust-anchor file."""
        if not ca_names:
            raise ValueError("trust_bundle() needs at least one CA name")
        roots = dict.fromkeys(self.plan.root_of(n) for n in ca_names)
        return write_trust_bundle(self.directory / "bundles", [(r, self.ca_cert(r)) for r in roots])

    def chain_cas(self, ca_name: str) -> tuple[str, ...]:
        """``ca_name`` and its ancestors, nearest first, ending with the root."""
        return tuple(_ca_line(self.plan, ca_name))

    # -- faults --------------------------------------------------------------------------------------------------
    def fault(self, kind: Fault, like: str) -> LeafFiles:
        """A bad variant of leaf ``like`` (see :mod:`harness.pki.faults`), made on demand and cached on disk."""
        if kind not in FAULTS:
            raise KeyError(f"no fault {kind!r} (known: {', '.join(FAULTS)})")
        spec = self.plan.leaf(like)
        name = f"{like}~{kind}"
        if name in self._leaves:
            return self._leaves[name]
        target = self.directory / "faults" / name
        if not target.is_dir():
            if kind == "revoked" and like not in self._revoked:
                raise InputError(self.directory / "set.json", f"reserves no CRL serial for leaf {like!r}",
                                 "generate the set with `mtls-harness certs generate` to get revoked variants")
            line = _ca_line(self.plan, spec.issuer)
            # an unknown-CA or self-signed variant is issued by none of the chain's CAs: their keys are not needed
            # (a chain file's real identity, whose CA key is not given, still gets these two)
            cas = {n: self._signed_ca(n, key=kind not in ("unknown-ca", "self-signed")) for n in line}
            material = build_fault(
                kind,
                spec,
                self.plan.key_type,
                issuer=cas[spec.issuer],
                intermediates=tuple(cas[n] for n in line[:-1]),
                root=cas[line[-1]],
                revoked_serial=self._revoked.get(like),
            )
            tmp = _new_tmp(target.parent, name)
            try:
                _write_leaf_dir(tmp, material.leaf, material.chain, material.key)
                for fname, certs in material.extra.items():
                    _write(tmp / fname, cert_pem(*certs))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _install(tmp, target, replace=False)  # losing the race is fine: the winner's files are equivalent
        self._leaves[name] = leaf_files_in(name, target)
        return self._leaves[name]

    def _signed_ca(self, name: str, *, key: bool = True) -> Signed:
        cert = x509.load_pem_x509_certificate(self.ca_cert(name).read_bytes())
        if not key:  # a stand-in key that signs nothing: the fault being made is not issued by this CA
            return Signed(cert, ec.generate_private_key(ec.SECP256R1()))
        private = serialization.load_pem_private_key(self.ca_key(name).read_bytes(), password=None)
        return Signed(cert, private)  # type: ignore[arg-type]


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(path, f"missing ({what})", "regenerate the set with `mtls-harness certs generate`")
    return path


def write_trust_bundle(directory: Path, roots: Sequence[tuple[str, Path]]) -> Path:
    """The trust-anchor file of these roots (name, PEM file), each once and in order, in ``directory``: named after
    them and written once (a bundle's content never changes under its name)."""
    unique = list(dict.fromkeys(roots))
    path = directory / ("+".join(name for name, _ in unique) + ".pem")
    if not path.exists():
        write_atomic(path, b"".join(pem.read_bytes() for _, pem in unique))
    return path


def leaf_files_in(name: str, d: Path) -> LeafFiles:
    """The leaf ``name`` stored in directory ``d`` (``cert.pem``, ``chain.pem``, ``key.pem``, as a cert set keeps
    it); raises :class:`InputError` for a missing or unreadable certificate."""
    cert_path = _need(d / "cert.pem", "the leaf certificate")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise InputError(cert_path, f"is not a PEM certificate ({exc})", "replace it with a PEM certificate") from None
    return LeafFiles(
        name=name,
        cert=cert_path,
        chain=_need(d / "chain.pem", "the leaf's chain"),
        key=_need(d / "key.pem", "the leaf's private key"),
        fingerprint_sha256=fingerprint_sha256(cert),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
    )


# ---------------------------------------------------------------------------------------------------------------
# loading and caching
# ---------------------------------------------------------------------------------------------------------------
def load_cert_set(directory: Path, plan: PKIPlan | None = None) -> CertSet:
    """Open a set in the layout above. The plan comes from ``plan``, else ``set.json``, else it is inferred from the
    certificates (CA parents from issuer names, leaf roles from their EKU)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "no such directory", "pass a cert-set directory (see fixtures/certs/README.md)")
    meta_path = directory / "set.json"
    revoked: dict[str, int] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            revoked = {k: int(v, 16) for k, v in meta.get("revoked_serials", {}).items()}
            plan = plan or _plan_from_json(meta["plan"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(meta_path, f"is not a cert-set description ({exc})",
                             "delete set.json to infer the plan from the certificates, or regenerate the set") from None
    if plan is None:
        plan = _infer_plan(directory)
    cs = CertSet(directory, plan, revoked)
    for ca in plan.cas:
        cs.ca_cert(ca.name)
    for lf in plan.leaves:
        cs.leaf(lf.name)
    return cs


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise InputError(path, "is not a PEM certificate", "replace it with a PEM certificate") from None


def _cn(name: x509.Name, fallback: str) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else fallback


def _infer_plan(directory: Path) -> PKIPlan:
    for p in sorted([*(directory / "cas").glob("*"), *(directory / "leaves").glob("*")]):
        if (p / "key.pem").is_file() and not (p / "cert.pem").is_file():
            raise InputError(p / "key.pem", "has no certificate beside it (cert.pem is missing)",
                             f"add {p / 'cert.pem'}, the certificate that goes with this key")
    ca_dirs = sorted(p for p in (directory / "cas").glob("*") if (p / "cert.pem").is_file())
    leaf_dirs = sorted(p for p in (directory / "leaves").glob("*") if (p / "cert.pem").is_file())
    if not ca_dirs and not leaf_dirs:
        raise InputError(directory, "holds no cert set (no cas/<name>/cert.pem or leaves/<name>/cert.pem)",
                         "lay the PEM files out as fixtures/certs/README.md describes, or run `certs generate`")
    ca_certs = {p.name: _read_cert(p / "cert.pem") for p in ca_dirs}
    by_subject = {c.subject: n for n, c in ca_certs.items()}
    cas = []
    for n, c in ca_certs.items():
        parent = None if c.issuer == c.subject else by_subject.get(c.issuer)
        cas.append(CASpec(n, _cn(c.subject, n), parent))
    leaves = []
    for p in leaf_dirs:
        c = _read_cert(p / "cert.pem")
        issuer = by_subject.get(c.issuer)
        if issuer is None:
            raise InputError(p / "cert.pem", f"is issued by {c.issuer.rfc4514_string()!r}, which no cas/*/cert.pem is",
                             "add the issuing CA as cas/<name>/cert.pem")
        try:
            ekus = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            usage = "server" if ExtendedKeyUsageOID.SERVER_AUTH in ekus else "client"
        except x509.ExtensionNotFound:
            usage = "server"
        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
                str(v) for v in san.get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            sans = ()
        orgs = c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        leaves.append(LeafSpec(p.name, issuer, _cn(c.subject, p.name), usage, sans,  # type: ignore[arg-type]
                               str(orgs[0].value) if orgs else "Contoso"))
    key_type: KeyType = "ecdsa"
    first = next(iter(ca_certs.values()), None)
    if first is not None and first.public_key_algorithm_oid.dotted_string == "1.2.840.113549.1.1.1":
        key_type = "rsa"
    return PKIPlan(cas=tuple(cas), leaves=tuple(leaves), key_type=key_type)


def _fresh(directory: Path) -> bool:
    try:
        meta = json.loads((directory / "set.json").read_text())
        expires = dt.datetime.fromisoformat(meta["expires"])
    except (OSError, ValueError, KeyError):
        return False
    return bool(meta.get("format") == FORMAT and expires - now() > dt.timedelta(days=REFRESH_DAYS))


def set_is_complete(directory: Path, plan: PKIPlan) -> bool:
    """Every file ``plan`` needs is in the set at ``directory``: each CA's cert.pem (key.pem and crl.pem unless the
    user supplied the CA), each leaf's cert.pem, chain.pem and key.pem. A set cached by an older version, or one
    a person pruned, is incomplete — :func:`cert_set_for` then regenerates it instead of failing later."""
    try:
        supplied = set(json.loads((directory / "set.json").read_text()).get("supplied") or {})
    except (OSError, ValueError, AttributeError):
        return False
    need = [directory / "cas" / ca.name / f for ca in plan.cas
            for f in (("cert.pem",) if ca.name in supplied else ("cert.pem", "key.pem", "crl.pem"))]
    need += [directory / "leaves" / lf.name / f for lf in plan.leaves for f in ("cert.pem", "chain.pem", "key.pem")]
    return all(p.is_file() for p in need)


def cert_set_for(plan: PKIPlan) -> CertSet:
    """The set for ``plan``, cached under :func:`cache_root`/<plan digest>/ and reused across runs (regenerated
    when it would expire within :data:`REFRESH_DAYS`). Safe when several processes ask at once."""
    _check_plan(plan)
    target = cache_root() / plan_digest(plan)
    if target.is_dir() and _fresh(target) and set_is_complete(target, plan):
        return load_cert_set(target, plan)
    stale = target.is_dir()
    tmp = _new_tmp(target.parent, target.name)
    try:
        _build_set(plan, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _install(tmp, target, replace=stale)  # on a lost race the other process's set is used
    return load_cert_set(target, plan)
