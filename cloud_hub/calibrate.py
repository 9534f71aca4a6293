"""Per-site calibration from unlabelled data: `vigil hub calibrate` (issue 13).

A threshold chosen on one hospital's validation split alarms more at another (issue 13:
3.4 alarm-hours per patient-day at the unseen hospital). A site's own vital-sign history
is in the hub store already: the `vitals_summaries` its gateways sent, one per closed
hour, with the values the gateway aggregated and the static data (age, sex, ICULOS).

Site: the fleet has no site notion of its own; a site is the CHANNEL its gateways follow
(`gateways.channel`, what `vigil hub assign` sets and `vigil hub targets` shows), so a
site's release reaches exactly its gateways. `--channel` may name another channel to
publish on (e.g. a canary channel of that site first).

Steps: the site's gateways and their summaries; each stay's hourly rows rebuilt in the
bundle's feature order (`cloud_hub/burden.py` `score_rows`: the gateway's dense grid,
`stay_windows`, `min_observed`, the bundle in LiteRT); the burden curve WITHOUT labels
(all stays count: most ICU stays are not septic, so the burden is slightly overstated,
never understated); the lowest threshold whose burden meets the budget; a new manifest
(same model.tflite and sha256, threshold changed, version `BASE-cal-SITE-STAMP`, the
curve, the budget and the calibration's provenance); a release signed by the hub's key,
verified and run as a gateway would, published retained on the channel and recorded in
the ledger (`cloud_hub/rollout/release.py`, the rollout's own path). The evidence (the
site's score distribution, the curve, expected burden at the old and new threshold,
stays, hours, patient-days) goes to MLflow (experiment `vigil-calibration`).

The model still never silences anything: a higher threshold lowers only this risk alarm's
burden; the monitor's own alarms are untouched (contracts/alarms.py).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.bundle import BundleError, Manifest, key_id, load_trusted_keys, verify_parts
from contracts.paths import default_trusted_keys_dir
from contracts.timeutil import iso_ms, utc_now

from .burden import (
    BudgetError,
    Curve,
    CurvePoint,
    StayRisks,
    choose_threshold,
    operating_curve,
    score_rows,
    with_operating_point,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from cloud_hub.keys import KeyProvider
    from cloud_hub.rollout.ledger import Ledger, LedgerEntry, StoreLedger
    from model_runtime.litert import RiskModel

EXPERIMENT = "vigil-calibration"
MAX_GAP_HOURS = 24 * 7  # the gateway's MAX_GAP_STEPS at one-hour steps
Echo = Callable[[str], None]


class CalibrationError(ValueError):
    """Calibration cannot be done; the message is one line saying what and what to do."""


@dataclass
class SiteHistory:
    """A site's stays as hourly rows in a bundle's feature order (NaN missing)."""

    gateways: list[str]
    stays: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]  # name, hours, dyn, static
    summaries: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> summaries left out


@dataclass
class CalibrationResult:
    site: str
    channel: str
    base: Manifest
    manifest: dict[str, Any]
    curve: Curve
    point: CurvePoint
    base_burden: float  # the old threshold's burden at this site (replayed the same way)
    stays: int
    hours: int
    run_id: str
    entry: LedgerEntry | None = None  # the published release (None: not published)

    def lines(self) -> list[str]:
        out = [
            f"site {self.site}: {self.stays} stays, {self.hours} hours "
            f"({self.hours / 24:.1f} patient-days, unlabelled: all stays counted)",
            f"threshold {self.base.threshold.value:.3f} -> {self.point.threshold:.3f}: "
            f"{self.base_burden:.2f} -> {self.point.alarm_hours_per_patient_day:.2f} "
            "alarm-hours per patient-day",
            f"evidence: MLflow run {self.run_id} (experiment {EXPERIMENT})",
        ]
        if self.entry is not None:
            e = self.entry
            out.append(
                f"published {e.name} {e.version} on {e.channel} (release {e.seq}, key {e.key_id})"
            )
        return out


def site_gateways(engine: Engine, site: str) -> list[str]:
    """The gateways following channel `site` in the fleet registry; a one-line error
    naming the known channels when none does."""
    from sqlalchemy import select

    from cloud_hub.store.models import Gateway

    with engine.connect() as conn:
        rows = conn.execute(select(Gateway.gw, Gateway.channel)).all()
    gws = sorted(gw for gw, ch in rows if ch == site)
    if not gws:
        known = ", ".join(sorted({ch for _, ch in rows})) or "none: the fleet is empty"
        raise CalibrationError(
            f"--site {site}: no gateway follows channel {site!r} (a site is its gateways' "
            f"channel; channels in the fleet: {known})"
        )
    return gws


def read_site(engine: Engine, site: str, manifest: Manifest) -> SiteHistory:
    """The site's vitals summaries as stays of hourly rows for `manifest`'s preprocessing."""
    from sqlalchemy import select

    from cloud_hub.store.models import VitalsSummary as V

    spec = manifest.preprocessing
    gws = site_gateways(engine, site)
    q = (
        select(V.gw, V.stay, V.iculos_hours, V.step_seconds, V.values, V.static)
        .where(V.gw.in_(gws))
        .order_by(V.gw, V.stay, V.iculos_hours)
    )
    by_stay: dict[tuple[str, str], list[tuple[float, list[float], list[float]]]] = {}
    hist = SiteHistory(gateways=gws, stays=[])
    with engine.connect() as conn:
        for gw, stay, iculos, step_seconds, values, static in conn.execute(q):
            hist.summaries += 1
            if step_seconds != spec.window.step_seconds:
                reason = f"step of {step_seconds} s, the model's is {spec.window.step_seconds} s"
                hist.skipped[reason] = hist.skipped.get(reason, 0) + 1
                continue
            if iculos is None or not math.isfinite(iculos) or iculos < 0:
                hist.skipped["no ICU time"] = hist.skipped.get("no ICU time", 0) + 1
                continue
            vals = values or {}
            st = dict(static or {}, ICULOS=iculos)
            by_stay.setdefault((gw, stay), []).append(
                (
                    float(iculos),
                    [_num(vals.get(n)) for n in spec.feature_names],
                    [_num(st.get(n)) for n in spec.static_names],
                )
            )
    if not hist.summaries:
        raise CalibrationError(
            f"--site {site}: its gateways ({', '.join(gws)}) sent no vital-sign summaries "
            "yet: nothing to calibrate on"
        )
    for (gw, stay), rows in by_stay.items():
        hours = np.array([r[0] for r in rows])
        # A jump of more than a week starts a new history at the gateway (a clock reset,
        # edge_agent/windows.py MAX_GAP_STEPS): the same here.
        cuts = np.flatnonzero(np.diff(np.floor(hours)) > MAX_GAP_HOURS) + 1
        for k, (a, b) in enumerate(zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True)):
            hist.stays.append(
                (
                    f"{gw}/{stay}" + (f"#{k}" if k else ""),
                    hours[a:b],
                    np.array([r[1] for r in rows[a:b]], dtype=float),
                    np.array([r[2] for r in rows[a:b]], dtype=float),
                )
            )
    if not hist.stays:
        why = "; ".join(f"{n} with {r}" for r, n in hist.skipped.items())
        raise CalibrationError(f"--site {site}: no usable vital-sign summaries ({why})")
    return hist


def base_bundle(
    bundle: Path | None,
    channel: str,
    ledger: Ledger | StoreLedger,
    trusted: dict[str, Any],
) -> tuple[dict[str, Any], bytes, str]:
    """(manifest, model, where): `bundle`, else the channel's current release; verified
    against `trusted` (never re-sign what nobody trusted)."""
    from cloud_hub.rollout.release import RolloutError, read_bundle_folder

    if bundle is not None:
        try:
            manifest, blob = read_bundle_folder(bundle)
            sig = json.loads((Path(bundle) / "manifest.sig.json").read_text())
        except (RolloutError, OSError, ValueError) as e:
            raise CalibrationError(f"--bundle {bundle}: {e}") from None
        where = f"--bundle {bundle}"
    else:
        cur = ledger.current(channel)
        if cur is None:
            raise CalibrationError(
                f"channel {channel!r} has no release yet: give the model with --bundle DIR"
            )
        rel = cur.release()
        manifest, sig, blob = rel.manifest, rel.signature, base64.b64decode(rel.model_b64)
        where = f"release {cur.seq} on {channel} ({cur.name} {cur.version})"
    try:
        verify_parts(manifest, sig, blob, trusted)
    except BundleError as e:
        raise CalibrationError(
            f"{where} does not verify with the hub's trusted keys: {e}"
        ) from None
    return manifest, blob, where


def score_site(model: RiskModel, manifest: Manifest, hist: SiteHistory) -> list[StayRisks]:
    spec = manifest.preprocessing
    return [score_rows(model, spec, name, h, d, s) for name, h, d, s in hist.stays]


def calibrate(
    engine: Engine,
    site: str,
    budget: float,
    provider: KeyProvider,
    ledger: Ledger | StoreLedger,
    *,
    channel: str | None = None,
    bundle: Path | None = None,
    tracking_uri: str | None = None,
    publish: Callable[[Any], LedgerEntry] | None = None,
    echo: Echo = print,
) -> CalibrationResult:
    """Calibrate `site`'s threshold to `budget` (see the module); `publish(release)` sends
    the signed release (None: made and verified, not sent)."""
    from cloud_hub.rollout.release import RolloutError, make_release, next_seq
    from model_runtime.litert import LiteRTError, RiskModel

    if not (math.isfinite(budget) and budget > 0):
        raise CalibrationError(
            f"--alarm-budget must be > 0 alarm-hours per patient-day, got {budget:g}"
        )
    channel = channel or site
    site_gateways(engine, site)  # an unknown site is named before anything is loaded
    pub = provider.public_key()
    trusted = load_trusted_keys([default_trusted_keys_dir()]) | {key_id(pub): pub}
    raw, blob, where = base_bundle(bundle, channel, ledger, trusted)
    base = Manifest.model_validate(raw)
    hist = read_site(engine, site, base)
    try:
        model = RiskModel(blob)
    except LiteRTError as e:
        raise CalibrationError(f"{where}: the model does not load: {e}") from None
    echo(f"scoring {len(hist.stays)} stays of {', '.join(hist.gateways)} with {where}")
    risks = score_site(model, base, hist)
    hours = int(sum(s.hours.shape[0] for s in risks))
    try:
        curve = operating_curve(risks)
        base_burden = operating_curve(risks, [base.threshold.value]).points[0]
        point = choose_threshold(curve, budget)
    except BudgetError as e:
        raise CalibrationError(f"site {site}: {e}") from None
    stamp = utc_now().strftime("%Y%m%d%H%M%S")
    prior = base.calibration
    base_version = prior.base_version if prior is not None else base.version
    version = f"{base_version}-cal-{site}-{stamp}"[:64]
    run_id = _log_evidence(
        tracking_uri, site, channel, budget, base, where, hist, risks, curve, point, base_burden
    )
    calibration = {
        "site": site,
        "channel": channel,
        "base_version": base_version,
        "base_threshold": base.threshold.value,
        "alarm_budget": budget,
        "expected_alarm_hours_per_patient_day": point.alarm_hours_per_patient_day,
        "stays": len(risks),
        "hours": hours,
        "gateways": hist.gateways,
        "calibrated_at": iso_ms(utc_now()),
        "mlflow_run_id": run_id,
        "labels": "none: all stays counted (most are not septic)",
    }
    manifest = with_operating_point(
        raw,
        curve,
        point,
        budget,
        data=f"site {site}: {len(risks)} stays of {', '.join(hist.gateways)}, unlabelled",
        method=(
            f"alarm budget {budget:g} alarm-hours per patient-day at site {site}, "
            "unlabelled history replayed through the gateway's alarm machine"
        ),
        version=version,
        calibration=calibration,
    )
    result = CalibrationResult(
        site=site,
        channel=channel,
        base=base,
        manifest=manifest,
        curve=curve,
        point=point,
        base_burden=base_burden.alarm_hours_per_patient_day,
        stays=len(risks),
        hours=hours,
        run_id=run_id,
    )
    try:
        release = make_release(manifest, blob, channel, provider, seq=next_seq(ledger.last_seq()))
        if publish is not None:
            result.entry = publish(release)
    except (RolloutError, ValueError) as e:
        raise CalibrationError(f"release not published: {e}") from None
    if result.entry is not None:
        _tag_release(tracking_uri, run_id, result.entry)
    return result


def _log_evidence(
    tracking_uri: str | None,
    site: str,
    channel: str,
    budget: float,
    base: Manifest,
    where: str,
    hist: SiteHistory,
    risks: list[StayRisks],
    curve: Curve,
    point: CurvePoint,
    base_point: CurvePoint,
) -> str:
    """One MLflow run: the site's score distribution, curve and expected burden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from cloud_hub.training import tracking

    tracking.setup(tracking_uri, EXPERIMENT)
    scored = curve.scored_risks
    total = int(sum(s.hours.shape[0] for s in risks))
    with mlflow.start_run(run_name=f"calibrate-{site}") as run:
        mlflow.set_tags({"kind": "calibration", "site": site, "channel": channel})
        mlflow.log_params(
            {
                "site": site,
                "channel": channel,
                "alarm_budget": budget,
                "base_model": f"{base.name} {base.version}",
                "base_source": where,
                "base_threshold": base.threshold.value,
                "gateways": ",".join(hist.gateways),
                "labels": "none (unlabelled: all stays counted)",
                **{f"alarm_{k}": v for k, v in curve.manifest_curve("")["alarm"].items()},
            }
        )
        q = np.quantile(scored, [0.5, 0.9, 0.99]) if scored.size else [math.nan] * 3
        figures = {
            "stays": len(risks),
            "hours": total,
            "patient_days": total / 24.0,
            "summaries": hist.summaries,
            "summaries_skipped": sum(hist.skipped.values()),
            "scored_hours": int(scored.size),
            "insufficient_hours": total - int(scored.size),
            "risk_p50": float(q[0]),
            "risk_p90": float(q[1]),
            "risk_p99": float(q[2]),
            "threshold": point.threshold,
            "expected_alarm_hours_per_patient_day": point.alarm_hours_per_patient_day,
            "base_alarm_hours_per_patient_day": base_point.alarm_hours_per_patient_day,
        }
        mlflow.log_metrics({k: float(v) for k, v in figures.items() if math.isfinite(float(v))})
        counts, edges = np.histogram(scored, bins=20, range=(0.0, 1.0))
        mlflow.log_dict(
            {"bins": edges.tolist(), "counts": counts.tolist()}, "score_distribution.json"
        )
        mlflow.log_dict(curve.manifest_curve(f"site {site}"), "operating_curve.json")
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
        ax1.hist(scored, bins=40, range=(0, 1), color="C0")
        for t, style in ((base.threshold.value, "k--"), (point.threshold, "r-")):
            ax1.axvline(t, color=style[0], ls=style[1:])
        ax1.set_xlabel("risk (scored hours)")
        ax1.set_title(f"site {site}: score distribution")
        ax2.plot(
            [p.threshold for p in curve.points],
            [p.alarm_hours_per_patient_day for p in curve.points],
            "C1.-",
        )
        ax2.axhline(budget, color="r", ls=":")
        ax2.set_xlabel("threshold")
        ax2.set_ylabel("alarm-hours per patient-day")
        fig.tight_layout()
        mlflow.log_figure(fig, "plots/site_burden.png")
        plt.close(fig)
        return run.info.run_id


def _tag_release(tracking_uri: str | None, run_id: str, entry: LedgerEntry) -> None:
    import mlflow

    from cloud_hub.training import tracking

    client = mlflow.MlflowClient(tracking_uri=tracking.resolve_tracking_uri(tracking_uri))
    client.set_tag(run_id, "release", f"{entry.channel}/{entry.seq} {entry.name} {entry.version}")


def _num(x: object) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


__all__ = ["CalibrationError", "CalibrationResult", "calibrate", "read_site", "site_gateways"]
