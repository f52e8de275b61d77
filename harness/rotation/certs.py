"""Two cert sets seen as one: names carry their set (``current:apim-client``, ``next:apim-client-ca``).

    pair = CertPair(load_cert_set(cur), load_cert_set(nxt), workdir)
    pair.leaf("next:apim-client").chain                       # what APIM presents after the swap
    pair.trust_bundle("current:apim-client-ca", "next:apim-client-ca")  # an ingress trusting both roots
    pair.identify(probe_result.peer_chain[0].sha256)          # which leaf a hop served: "next:gateway-server"

The rotation rehearsal mixes the two sets in one running chain, so the renderers take a :class:`CertPair` like any
:class:`~harness.pki.certset.CertSet`. Bundles are written under the pair's own directory; CA keys are never read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography import x509

from harness.errors import InputError, UsageError
from harness.model.topology import CASpec, PKIPlan
from harness.pki.certset import CertSet, LeafFiles, write_trust_bundle
from harness.pki.x509 import fingerprint_sha256

__all__ = ["SETS", "CertPair", "Ref", "SetName", "refs_text"]

SetName = Literal["current", "next"]
SETS: Final[tuple[SetName, ...]] = get_args(SetName)


# ---------------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Ref:
    """A CA or leaf of one of the two sets: ``next:apim-client``."""

    set: SetName
    name: str

    def __str__(self) -> str:
        return f"{self.set}:{self.name}"

    @classmethod
    def parse(cls, text: object, where: str) -> Ref:
        if not isinstance(text, str) or ":" not in text:
            raise UsageError(f"{where}: {text!r} is not a certificate reference — write <set>:<name>, "
                             "e.g. next:apim-client (set: current or next)")
        which, _, name = text.partition(":")
        if which not in SETS:
            raise UsageError(f"{where}: unknown set {which!r} in {text!r} — use current:<name> or next:<name>")
        return cls(which, name)


def refs_text(text: Iterable[Ref]) -> str:
    """``current:x + next:x`` (or ``nothing``)."""
    return " + ".join(str(r) for r in text) or "nothing"


# ---------------------------------------------------------------------------------------------------------------
# the two sets as one
# ---------------------------------------------------------------------------------------------------------------
def _merged_plan(plan: PKIPlan) -> PKIPlan:
    cas = tuple(CASpec(f"{s}:{c.name}", c.common_name, f"{s}:{c.parent}" if c.parent else None)
                for s in SETS for c in plan.cas)
    leaves = tuple(dataclasses.replace(lf, name=f"{s}:{lf.name}", issuer=f"{s}:{lf.issuer}")
                   for s in SETS for lf in plan.leaves)
    return PKIPlan(cas=cas, leaves=leaves, key_type=plan.key_type)


def _same_names(current: PKIPlan, nxt: PKIPlan, where: Path) -> None:
    for what, a, b in (("CA", {c.name: c.parent for c in current.cas}, {c.name: c.parent for c in nxt.cas}),
                       ("leaf", {x.name: x.issuer for x in current.leaves}, {x.name: x.issuer for x in nxt.leaves})):
        missing = sorted(set(a) - set(b))
        if missing:
            raise InputError(where, f"has no {what} named {missing[0]!r} (the current set has it)",
                             "generate the next set for the same PKI plan: `mtls-harness certs generate DIR`")
        moved = sorted(n for n in a if a[n] != b.get(n))
        if moved:
            raise InputError(where, f"issues {what} {moved[0]!r} under {b[moved[0]]!r}, the current set under "
                             f"{a[moved[0]]!r}", "generate the next set for the same PKI plan")


class CertPair(CertSet):
    """The current and the next cert set seen as one set whose names carry the set: ``current:apim-client``.

    The renderers take it like any :class:`CertSet` (``leaf``, ``trust_bundle``, ``crl``), so a chain can mix the
    two sets — e.g. an ingress trusting both sets' client CAs. Trust bundles are written under ``workdir``.
    """

    def __init__(self, current: CertSet, nxt: CertSet, workdir: Path) -> None:
        _same_names(current.plan, nxt.plan, nxt.directory)
        super().__init__(Path(workdir), _merged_plan(current.plan))
        self.base_plan = current.plan
        self.sets: dict[SetName, CertSet] = {"current": current, "next": nxt}
        self._fps: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"CertPair(current={self.sets['current'].directory}, next={self.sets['next'].directory})"

    def _split(self, name: str) -> tuple[CertSet, str]:
        ref = Ref.parse(name, "cert pair")
        return self.sets[ref.set], ref.name

    def leaf(self, name: str) -> LeafFiles:
        cs, base = self._split(name)
        return cs.leaf(base)

    def ca_cert(self, ca_name: str) -> Path:
        cs, base = self._split(ca_name)
        return cs.ca_cert(base)

    def ca_key(self, ca_name: str) -> Path:
        raise UsageError("the rotation rehearsal never reads a CA private key")

    def crl(self, ca_name: str) -> Path:
        cs, base = self._split(ca_name)
        return cs.crl(base)

    def trust_bundle(self, *ca_names: str) -> Path:
        """A PEM file with the roots above those CAs (each once, in order), e.g. both sets' apim-client-ca roots."""
        if not ca_names:
            raise ValueError("trust_bundle() needs at least one CA name")
        roots = dict.fromkeys(str(self.root(Ref.parse(n, "trust bundle"))) for n in ca_names)
        return write_trust_bundle(self.directory / "bundles", [(r.replace(":", "."), self.ca_cert(r)) for r in roots])

    # -- facts -------------------------------------------------------------------------------------------------
    def root(self, ref: Ref) -> Ref:
        """The root CA above a CA or a leaf."""
        if any(c.name == ref.name for c in self.base_plan.cas):
            return Ref(ref.set, self.base_plan.root_of(ref.name))
        return Ref(ref.set, self.base_plan.root_of(self.base_plan.leaf(ref.name).issuer))

    def fingerprint(self, ref: Ref) -> str:
        """SHA-256 (hex) of a CA's or a leaf's certificate."""
        key = str(ref)
        if key not in self._fps:
            if any(c.name == ref.name for c in self.base_plan.cas):
                cert = x509.load_pem_x509_certificate(self.ca_cert(key).read_bytes())
                self._fps[key] = fingerprint_sha256(cert)
            else:
                self._fps[key] = self.leaf(key).fingerprint_sha256
        return self._fps[key]

    def root_fp(self, ref: Ref) -> str:
        return self.fingerprint(self.root(ref))

    def identify(self, sha256: str | None) -> str:
        """Which leaf of either set has this fingerprint: ``next:gateway-server`` (or ``unknown <sha256[:12]>``)."""
        if not sha256:
            return "no certificate"
        for s in SETS:
            for lf in self.base_plan.leaves:
                if self.fingerprint(Ref(s, lf.name)) == sha256:
                    return f"{s}:{lf.name}"
        return f"unknown {sha256[:12]}"

    def same(self, name: str, kind: Literal["ca", "leaf"]) -> bool:
        """True when the next set's CA root / leaf is the very certificate of the current set."""
        cur, nxt = Ref("current", name), Ref("next", name)
        if kind == "ca":
            return self.root_fp(cur) == self.root_fp(nxt)
        return self.fingerprint(cur) == self.fingerprint(nxt)
