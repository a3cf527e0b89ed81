"""Every metric, log code and setting that docs/ names is one the code has, and vice versa."""

from __future__ import annotations

import re
from pathlib import Path

from natsrouter.config import KEYS, is_service_link
from natsrouter.observability.verify import expected_families, shown_name
from natsrouter.service.shared_state import BREAKERS_BUCKET, DECIDES_BUCKET, STICKY_BUCKET

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "natsrouter"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "natsrouter-alerts.yml"


def all_docs() -> str:
    pages = [*DOCS.glob("*.md"), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    return "\n".join(p.read_text() for p in pages)


# router_-prefixed names in docs that are not metrics: durables, a queue group, a prefix.
NOT_METRICS = {"router_results", "router_acks", "router_decide_group", "router_nats"}


def exported_metric_names() -> set[str]:
    """Names as documented: counters with _total, histograms and gauges by family."""
    return {shown_name(name, kind) for name, kind in expected_families().items()}


def test_metrics_doc_lists_exactly_the_exported_metrics() -> None:
    """docs/metrics.md names every metric the code exports, and no other."""
    documented = set(re.findall(r"`(router_[a-z_]+)`", (DOCS / "metrics.md").read_text()))
    assert documented == exported_metric_names()


def test_no_doc_names_a_metric_the_code_lacks() -> None:
    """No doc anywhere names a router_ metric that is not exported."""
    mentioned = set(re.findall(r"\brouter_[a-z_]+[a-z]", all_docs())) - NOT_METRICS
    exported = exported_metric_names()
    series_suffixes = ("_bucket", "_count", "_sum")
    unknown = {
        m
        for m in mentioned
        if m not in exported
        and not any(m.endswith(s) and m.removesuffix(s) in exported for s in series_suffixes)
    }
    assert unknown == set()


def code_error_codes() -> set[str]:
    link = (SRC / "link" / "telemetry.py").read_text()
    router = (SRC / "service" / "events.py").read_text() + (SRC / "embedded.py").read_text()
    router += (SRC / "observability" / "logging.py").read_text()
    return set(re.findall(r'"(NATS_[A-Z_]+)"', link)) | set(
        re.findall(r'"(ROUTER_[A-Z_]+)"', router)
    )


def test_logging_doc_lists_exactly_the_codes_the_code_emits() -> None:
    """docs/logging.md's tables hold every error_code the code emits, and no other."""
    table = re.findall(
        r"^\| `((?:NATS|ROUTER)_[A-Z_]+)` \|", (DOCS / "logging.md").read_text(), re.M
    )
    assert set(table) == code_error_codes()
    assert len(table) == len(set(table))


def test_no_doc_names_an_unknown_code() -> None:
    """Every NATS_* or ROUTER_* code mentioned in the docs is emitted by the code."""
    mentioned = set(re.findall(r"\b(?:NATS|ROUTER)_[A-Z_]+[A-Z]\b", all_docs()))
    not_codes = {"ROUTER_" + s for s in (*STREAM_SUFFIXES, *(k.upper() for k in KEYS))}
    not_codes |= {m for m in mentioned if is_service_link(m)}  # Kubernetes Service variables
    assert mentioned - not_codes <= code_error_codes()


# Stream and bucket names (and ROUTER_<KEY> variables) share the ROUTER_ prefix with log codes.
STREAM_SUFFIXES = (
    "ASSIGNMENTS",
    "ACKS",
    "RESULTS",
    "USAGE",
    "DLQ",
    *(b.removeprefix("ROUTER_") for b in (DECIDES_BUCKET, STICKY_BUCKET, BREAKERS_BUCKET)),
)


def test_configuration_doc_covers_every_key_and_only_keys() -> None:
    """docs/configuration.md documents every key; every key-like name in docs exists."""
    conf = (DOCS / "configuration.md").read_text()
    table_keys = set()
    for row in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", conf, re.M):
        table_keys |= set(re.findall(r"`([a-z_]+)`", row))
    assert table_keys == set(KEYS)
    key_like = set(re.findall(rf"`((?:{SETTING_PREFIXES})_[a-z_]+)`", all_docs()))
    error_tags = set(
        re.findall(r'error_tag="([a-z_]+)"', (SRC / "link" / "telemetry.py").read_text())
    )
    assert key_like - set(KEYS) - error_tags - NOT_SETTINGS == set()


# Every setting starts with one of these; so do a few names that are not settings.
SETTING_PREFIXES = "|".join(sorted({key.split("_")[0] for key in KEYS}))
NOT_SETTINGS = {"assignment_id", "ack_wait"}  # a message field; a consumer's setting in NATS


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", ALERT_RULES.read_text(), re.M)


def test_every_alert_the_docs_name_exists_and_every_alert_is_documented() -> None:
    """Docs name only shipped alerts; each has a runbook section and a monitoring.md row."""
    shipped = alert_names()
    assert shipped and len(shipped) == len(set(shipped))
    mentioned = set(re.findall(r"\bRouter(?:Nats)?[A-Z][A-Za-z]+\b", all_docs()))
    assert mentioned - set(shipped) == set()
    runbook = set(re.findall(r"^### (\w+)$", (DOCS / "operations.md").read_text(), re.M))
    table = set(re.findall(r"^\| (\w+) \|", (DOCS / "monitoring.md").read_text(), re.M))
    assert set(shipped) <= runbook
    assert set(shipped) <= table
