"""Retraining in the hub: base dataset + labelled fleet data → candidate → gate → bundle.

One retrain is one MLflow parent run (`retrain`) holding the candidate's run (made
by training's `train`, so it is logged and registered exactly like `vigil hub train`
does). Then:

1. Both the candidate and the current `champion` (registry alias) are scored on the
   FIXED evaluation set: a frozen list of held-out stay ids, written once to a JSON
   file (`eval_set.json`: name, stay ids, sha256 of the ids) and never trained on.
   Each model gets its windows through its OWN preprocessing spec (logged with its
   run) and alarms at its own validation threshold. The set's name, hash and size are
   logged as parameters, so two retrains are comparable only when the hashes match.
2. The gate: the candidate is promoted only if it is not worse than the champion on
   the stated metrics, beyond the stated tolerances (`Gate`): eval AUROC and eval
   normalised utility. Gate parameters, both models' eval metrics and the decision
   (tag `gate` = promoted / rejected / no_champion, tag `gate_reason`) are logged.
3. Promoted: converted to int8 and signed (cloud_hub.conversion.bundle_build, then signed
   again with the hub's `KeyProvider`, so the key may live in Key Vault), the bundle
   logged to the candidate's run under `bundle/`, the registry version tagged with
   the bundle's sha256 and key id, and the `champion` alias moved to it.
   Rejected: the version stays registered (tag `gate=rejected`), the alias does not move.

Triggers (`vigil hub retrain --every 24h` / `--min-new-labels N`): `labels_since_last`
counts labelled fleet hours against the count recorded by the last retrain
(`<work_dir>/retrain/state.json`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.canonical import LABEL_COLUMN
from contracts.paths import work_dir
from contracts.preprocessing import PreprocessSpec

from .keys import KeyProvider, resign_bundle

if TYPE_CHECKING:
    import keras
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from cloud_hub.training.dataset import Prepared, Windows
    from cloud_hub.training.train import ModelResult

log = logging.getLogger(__name__)
Echo = Callable[[str], None]
EVAL_SET_SCHEMA = "vigil.eval_set/1"


class RetrainError(RuntimeError):
    """Retraining cannot proceed; the message says why and what to do."""


@dataclass(frozen=True)
class Gate:
    """Not worse than the champion: candidate >= champion - tolerance, on each metric."""

    max_auroc_drop: float = 0.0
    max_utility_drop: float = 0.0

    def params(self) -> dict[str, float | str]:
        return {
            "gate_metrics": "eval_auroc,eval_utility",
            "gate_max_auroc_drop": self.max_auroc_drop,
            "gate_max_utility_drop": self.max_utility_drop,
            "gate_rule": "promote iff candidate >= champion - max_drop on every gate metric",
        }

    def decide(self, cand: dict[str, float], champ: dict[str, float] | None) -> tuple[bool, str]:
        if champ is None:
            return True, "no champion yet: the first model is promoted"
        failed = []
        for metric, drop in (("auroc", self.max_auroc_drop), ("utility", self.max_utility_drop)):
            c, b = cand[metric], champ[metric]
            if not (math.isfinite(c) and c >= b - drop):  # NaN fails the gate
                failed.append(f"{metric} {c:.4f} < champion {b:.4f} - {drop:g}")
        if failed:
            return False, "; ".join(failed)
        return True, (
            f"auroc {cand['auroc']:.4f} vs {champ['auroc']:.4f}, "
            f"utility {cand['utility']:.4f} vs {champ['utility']:.4f}: not worse"
        )


@dataclass(frozen=True)
class EvalSet:
    """A frozen list of held-out stays: the yardstick every retrain is judged by."""

    name: str
    stay_ids: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.stay_ids).encode()).hexdigest()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "schema": EVAL_SET_SCHEMA,
            "name": self.name,
            "sha256": self.sha256,
            "stay_ids": list(self.stay_ids),
        }
        tmp = path.with_suffix(".new")
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> EvalSet:
        try:
            body = json.loads(path.read_text())
            es = cls(body["name"], tuple(body["stay_ids"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RetrainError(f"evaluation set {path} is unreadable: {e}") from None
        if body.get("sha256") != es.sha256:
            raise RetrainError(
                f"evaluation set {path}: its stay list does not match its sha256 "
                "(edited by hand?); restore it or start a new set under another name"
            )
        return es

    @classmethod
    def freeze(
        cls, stays_labels: dict[str, bool], fraction: float, seed: int, name: str
    ) -> EvalSet:
        """Pick `fraction` of the stays, stratified by septic stay, seeded."""
        rng = np.random.default_rng(seed)
        picked: list[str] = []
        for septic in (True, False):
            group = sorted(s for s, v in stays_labels.items() if v == septic)
            k = max(1, int(round(fraction * len(group)))) if group else 0
            picked += [group[i] for i in rng.choice(len(group), size=k, replace=False)]
        return cls(name, tuple(sorted(picked)))


@dataclass
class RetrainConfig:
    base_data: Path
    eval_set: Path = field(default_factory=lambda: work_dir() / "retrain" / "eval_set.json")
    fleet_db: str | None = None  # hub store URL; None: base dataset only
    arch: str = "gru"
    steps: int = 12
    units: int = 32
    epochs: int = 12
    lr: float = 2e-3
    batch_size: int = 1024
    patience: int = 3
    seed: int = 2019
    limit_stays: int | None = None
    eval_fraction: float = 0.15
    tracking_uri: str | None = None
    experiment: str = "vigil-sepsis"
    registered_model: str = "vigil-sepsis"
    gate: Gate = field(default_factory=Gate)
    bundle_root: Path = field(default_factory=lambda: work_dir() / "bundles")
    state_path: Path | None = None  # default: state.json beside the evaluation set

    def __post_init__(self) -> None:
        if self.state_path is None:
            self.state_path = Path(self.eval_set).parent / "state.json"


@dataclass
class RetrainResult:
    run_id: str
    candidate_version: str | None
    promoted: bool
    reason: str
    candidate_eval: dict[str, float]
    champion_eval: dict[str, float] | None
    champion_version_before: str | None
    bundle: Path | None
    fleet_rows: int
    labelled_fleet_rows: int

    def lines(self) -> list[str]:
        c = self.candidate_eval
        out = [
            f"candidate v{self.candidate_version}: eval AUROC {c['auroc']:.4f}, "
            f"utility {c['utility']:.4f}"
        ]
        if self.champion_eval is not None:
            b = self.champion_eval
            out.append(
                f"champion v{self.champion_version_before}: eval AUROC {b['auroc']:.4f}, "
                f"utility {b['utility']:.4f}"
            )
        out.append(("PROMOTED: " if self.promoted else "not promoted: ") + self.reason)
        if self.bundle:
            out.append(f"signed bundle: {self.bundle}")
        return out


# --- data ---------------------------------------------------------------------------------
def fleet_table(db_url: str | None) -> pd.DataFrame:
    """The labelled fleet hours (canonical table) from the hub store, or an empty table."""
    from cloud_hub.export import empty_table, hourly_table

    if db_url is None:
        return empty_table()
    from cloud_hub.store import migrate, open_engine

    engine = open_engine(db_url)
    migrate(engine)
    table, _ = hourly_table(engine)
    return table[table[LABEL_COLUMN].notna()].reset_index(drop=True)


def labels_since_last(cfg: RetrainConfig) -> tuple[int, int]:
    """(labelled fleet rows now, labelled rows at the last retrain)."""
    now = len(fleet_table(cfg.fleet_db))
    try:
        before = int(json.loads(cfg.state_path.read_text()).get("labelled_fleet_rows", 0))
    except (OSError, ValueError):
        before = _labelled_at_last_retrain(cfg)  # a new host: ask MLflow
    return now, before


def _labelled_at_last_retrain(cfg: RetrainConfig) -> int:
    """`fleet_labelled_rows` of the newest retrain run in MLflow; 0 when none ran."""
    import mlflow

    from cloud_hub.training import tracking

    client = mlflow.MlflowClient(tracking_uri=tracking.resolve_tracking_uri(cfg.tracking_uri))
    runs = _retrain_runs(client, cfg.experiment, 1)
    return int(runs[0].data.params.get("fleet_labelled_rows", 0)) if runs else 0


def _retrain_runs(client: MlflowClient, experiment: str, n: int) -> list[Run]:
    """The newest `n` retrain runs of `experiment`, newest first (none: [])."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id],
        filter_string="tags.kind = 'retrain'",
        order_by=["attributes.start_time DESC"],
        max_results=n,
    )


def _stay_septic(df: pd.DataFrame) -> dict[str, bool]:
    g = df.groupby("stay_id", sort=True)[LABEL_COLUMN].max()
    return {str(k): bool(v == 1) for k, v in g.items() if v == v}  # v == v: not NA


def _eval_windows(df: pd.DataFrame, ids: tuple[str, ...], spec: PreprocessSpec) -> Windows:
    from cloud_hub.training.dataset import make_windows, stays_from_table

    stays, _ = stays_from_table(df[df["stay_id"].isin(ids)])
    return make_windows(stays, spec)


def _score(model: keras.Model, windows: Windows) -> np.ndarray:
    return (
        model.predict(windows.inputs(), batch_size=4096, verbose=0).reshape(-1).astype(np.float32)
    )


def _figures(windows: Windows, risk: np.ndarray, threshold: float) -> dict[str, float]:
    from cloud_hub.training import metrics

    ev = metrics.evaluate(windows.y, risk, windows.stay, windows.scorable, threshold)
    return {k.removeprefix("eval_"): v for k, v in ev.as_metrics("eval").items()}


# --- the retrain --------------------------------------------------------------------------
def retrain(cfg: RetrainConfig, provider: KeyProvider, *, echo: Echo = print) -> RetrainResult:
    import mlflow
    import pandas as pd

    from cloud_hub.training import tracking
    from cloud_hub.training.bundle import representative
    from cloud_hub.training.dataset import DatasetError, load_table, prepare
    from cloud_hub.training.train import TrainConfig, train

    base, base_fp = load_table(str(cfg.base_data))
    fleet = fleet_table(cfg.fleet_db)
    echo(
        f"base {cfg.base_data.name}: {base['stay_id'].nunique()} stays; fleet: {len(fleet)} "
        f"labelled hours of {fleet['stay_id'].nunique()} stays"
    )
    uri, _ = tracking.setup(cfg.tracking_uri, cfg.experiment)
    client = mlflow.MlflowClient(tracking_uri=uri)
    if cfg.eval_set.exists():
        es = EvalSet.load(cfg.eval_set)
    elif (found := recover_eval_set(client, cfg.experiment)) is not None:
        # A new host or container (no local file): the set every earlier retrain was
        # judged by is in MLflow (Blob + PostgreSQL in production), so keep using it.
        es, run_id = found
        es.save(cfg.eval_set)
        echo(f"restored evaluation set {es.name} from MLflow run {run_id} -> {cfg.eval_set}")
    else:
        es = EvalSet.freeze(_stay_septic(base), cfg.eval_fraction, cfg.seed, "eval-v1")
        es.save(cfg.eval_set)
        echo(f"froze evaluation set {es.name}: {len(es.stay_ids)} stays -> {cfg.eval_set}")
    held_out = set(es.stay_ids)
    missing = held_out - set(base["stay_id"].astype(str).unique())
    if missing:
        raise RetrainError(
            f"{len(missing)} stays of evaluation set {es.name} are not in {cfg.base_data}: "
            "the set was frozen on another base dataset"
        )
    # The eval stays are never trained on; fleet stays are all training material
    # (--limit-stays thins the base dataset only, never the fleet's labelled stays).
    train_base = base[~base["stay_id"].isin(held_out)]
    if cfg.limit_stays is not None:
        ids = np.array(sorted(train_base["stay_id"].astype(str).unique()))
        if cfg.limit_stays < len(ids):
            keep = np.random.default_rng(cfg.seed + 1).choice(ids, cfg.limit_stays, replace=False)
            train_base = train_base[train_base["stay_id"].isin(keep)]
    table = pd.concat([train_base, fleet], ignore_index=True)
    fingerprint = hashlib.sha256(
        f"{base_fp}+fleet:{len(fleet)}:{fleet['stay_id'].nunique()}".encode()
    ).hexdigest()
    tcfg = TrainConfig(
        archs=(cfg.arch,),
        steps=cfg.steps,
        units=cfg.units,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        seed=cfg.seed,
        limit_stays=cfg.limit_stays,
        data=cfg.base_data,
        tracking_uri=cfg.tracking_uri,
        experiment=cfg.experiment,
        registered_model=cfg.registered_model,
        baselines=False,
    )
    try:
        prepared = prepare(
            table,
            steps=cfg.steps,
            seed=cfg.seed,
            fingerprint=fingerprint,
            limit_stays=cfg.limit_stays,
        )
    except DatasetError as e:
        raise RetrainError(str(e)) from None
    champ_mv = _champion(client, cfg.registered_model)
    with mlflow.start_run(run_name="retrain") as parent:
        mlflow.set_tag("kind", "retrain")
        mlflow.log_params(
            {
                "eval_set": es.name,
                "eval_set_sha256": es.sha256,
                "eval_set_stays": len(es.stay_ids),
                "base_data": str(cfg.base_data),
                "base_fingerprint": base_fp,
                "fleet_labelled_rows": len(fleet),
                "fleet_stays": int(fleet["stay_id"].nunique()),
                "limit_stays": cfg.limit_stays if cfg.limit_stays is not None else "all",
                "champion_version_before": champ_mv.version if champ_mv else "none",
                **cfg.gate.params(),
            }
        )
        mlflow.log_dict(
            {"name": es.name, "sha256": es.sha256, "stay_ids": list(es.stay_ids)},
            "eval_set.json",
        )
        cand = train(cfg.arch, prepared, tcfg, echo=echo, register=True)
        eval_w = _eval_windows(base, es.stay_ids, prepared.spec)
        cand_eval = _figures(eval_w, _score(cand.model, eval_w), cand.val.threshold)
        champ_eval = None
        if champ_mv is not None:
            champ_eval = _champion_eval(client, champ_mv, base, es)
        promoted, reason = cfg.gate.decide(cand_eval, champ_eval)
        metrics = {f"eval_candidate_{k}": v for k, v in cand_eval.items()}
        if champ_eval is not None:
            metrics |= {f"eval_champion_{k}": v for k, v in champ_eval.items()}
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        decision = "promoted" if promoted else "rejected"
        if champ_mv is None:
            decision = "no_champion"
        mlflow.set_tags(
            {
                "gate": decision,
                "gate_reason": reason,
                "candidate_version": cand.version or "",
            }
        )
        if cand.version:
            client.set_model_version_tag(cfg.registered_model, cand.version, "gate", decision)
            client.set_model_version_tag(cfg.registered_model, cand.version, "eval_set", es.sha256)
        bundle = None
        if promoted and cand.version:
            bundle = _bundle(cand, prepared, cfg, provider, client, echo, representative)
            client.set_registered_model_alias(
                cfg.registered_model, tracking.CHAMPION_ALIAS, cand.version
            )
            mlflow.set_tag("champion_version_after", cand.version)
        echo(f"gate: {decision}: {reason}")
    _save_state(cfg, len(fleet), parent.info.run_id)
    return RetrainResult(
        run_id=parent.info.run_id,
        candidate_version=cand.version,
        promoted=promoted,
        reason=reason,
        candidate_eval=cand_eval,
        champion_eval=champ_eval,
        champion_version_before=champ_mv.version if champ_mv else None,
        bundle=bundle,
        fleet_rows=len(fleet),
        labelled_fleet_rows=len(fleet),
    )


def recover_eval_set(client: MlflowClient, experiment: str) -> tuple[EvalSet, str] | None:
    """The evaluation set of the newest retrain run in `experiment`, from its artefact.

    None when no retrain ever ran there. A copy whose stay list does not match its
    logged sha256 is refused (RetrainError), never silently replaced by a new set.
    """
    import mlflow

    for run in _retrain_runs(client, experiment, 20):
        try:
            body = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/eval_set.json")
        except Exception:  # noqa: BLE001 - a run that died before logging it: try older
            continue
        es = EvalSet(str(body["name"]), tuple(body["stay_ids"]))
        if es.sha256 != body.get("sha256") or es.sha256 != run.data.params.get("eval_set_sha256"):
            raise RetrainError(
                f"evaluation set of MLflow run {run.info.run_id} does not match its sha256"
            )
        return es, run.info.run_id
    return None


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None


def _champion_eval(
    client: MlflowClient, mv: ModelVersion, base: pd.DataFrame, es: EvalSet
) -> dict[str, float]:
    """The champion scored on the eval set with its own spec and validation threshold."""
    import mlflow
    import mlflow.keras

    spec = PreprocessSpec.model_validate(
        mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/preprocess_spec.json")
    )
    threshold = float(mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/threshold.json")["value"])
    model = mlflow.keras.load_model(f"models:/{mv.name}/{mv.version}")
    w = _eval_windows(base, es.stay_ids, spec)
    return _figures(w, _score(model, w), threshold)


def _bundle(
    cand: ModelResult,
    prepared: Prepared,
    cfg: RetrainConfig,
    provider: KeyProvider,
    client: MlflowClient,
    echo: Echo,
    representative: Callable[..., Windows],
) -> Path:
    """int8, parity, golden, signed by the provider; logged and tagged in the registry."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud_hub.conversion.bundle_build import build_bundle
    from contracts.bundle import key_id as kid
    from model_runtime.verify import verify_full

    out = cfg.bundle_root / f"{cfg.registered_model}-{cand.version}"
    # build_bundle signs with a private key it holds; the provider's key may not be
    # extractable (Key Vault), so the bundle is built with a throw-away key and then
    # signed again by the provider, and verified with the provider's public key only.
    built = build_bundle(
        cand.model,
        out,
        Ed25519PrivateKey.generate(),
        spec=prepared.spec,
        representative=representative(prepared.splits["train"], seed=prepared.seed),
        validation=prepared.splits["val"],
        architecture=cand.name,
        version=str(cand.version),
        name=cfg.registered_model,
        metrics=cand.val.as_metrics("val"),
        mlflow_run_id=cand.run_id,
        dataset_fingerprint=prepared.fingerprint,
        echo=echo,
    )
    sig = resign_bundle(built.folder, provider)
    pub = provider.public_key()
    verify_full(built.folder, {kid(pub): pub})
    client.log_artifacts(cand.run_id, str(built.folder), "bundle")
    for k, v in built.parity.as_metrics().items():
        client.log_metric(cand.run_id, k, float(v))
    name, ver = cfg.registered_model, str(cand.version)
    client.set_model_version_tag(name, ver, "bundle_sha256", built.manifest.sha256)
    client.set_model_version_tag(name, ver, "bundle_key_id", sig["key_id"])
    client.set_model_version_tag(name, ver, "bundle_signer", provider.description)
    return built.folder


def _save_state(cfg: RetrainConfig, labelled: int, run_id: str) -> None:
    cfg.state_path.parent.mkdir(parents=True, exist_ok=True)
    body = {"labelled_fleet_rows": labelled, "last_run_id": run_id}
    with tempfile.NamedTemporaryFile("w", dir=cfg.state_path.parent, delete=False) as fh:
        json.dump(body, fh)
    os.replace(fh.name, cfg.state_path)


def bundle_of_version(name: str, version: str, tracking_uri: str | None, dest: Path) -> Path:
    """Download the signed bundle registered with `name` `version` (or alias) to `dest`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from cloud_hub.training import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        mv = (
            client.get_model_version(name, version)
            if version.isdigit()
            else client.get_model_version_by_alias(name, version)
        )
    except MlflowException as e:
        raise RetrainError(f"{name}@{version} is not in the registry at {uri}: {e}") from None
    mlflow.set_tracking_uri(uri)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="bundle", dst_path=str(dest)
        )
    except (MlflowException, OSError) as e:
        raise RetrainError(
            f"{name} version {mv.version} has no signed bundle (run {mv.run_id}): {e}; "
            "only versions promoted by `vigil hub retrain` (or trained with --bundle) have one"
        ) from None
    return Path(path)


def meta(result: RetrainResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "candidate_version": result.candidate_version,
        "promoted": result.promoted,
        "reason": result.reason,
        "bundle": str(result.bundle) if result.bundle else None,
    }
