"""Rolling signed bundles out to the fleet over MQTT: release, assign, stage, roll back.

One module per concern: `release` (stamp, check and publish a release; assign a
gateway to a channel; roll back), `ledger` (what was published where), `watch`
(a staged rollout waiting on the gateways' model states) and `targets` (each
gateway's channel, target and active model).

A release is a bundle (manifest + model) stamped and signed for publication: the hub
adds `release = {"seq", "issued_at", "rollback"}` to the manifest (seq: milliseconds
since the epoch, so it only grows) and signs the whole manifest with its
`KeyProvider`, then publishes a `ModelRelease` retained on `vigil/v1/models/{channel}`
(QoS 1, waiting for the broker's PUBACK). Gateways refuse a seq they have already
passed (a replayed message), so a rollback is a new release of the older model with
`rollback: true` (edge_agent/model_update.py).

- `assign`: a `join_channel` command on a gateway's `cmd` topic.
- `staged_rollout`: canary first; waits for every canary gateway (online, channel
  canary in its retained status) to report the new version active on
  `vigil/v1/gw/+/model`; any refusal or silence past the deadline halts the rollout
  (stable is not touched) and the report lists each gateway with its reason.
- `rollback`: republishes the model that was current before on the channel.
- The ledger remembers what was published where, for rollbacks and for the target
  column of `fleet_targets`: `StoreLedger`, the hub store's `channel_releases` table
  (the default: shared by every hub replica and kept with the rest of the hub's
  data), or `Ledger`, a folder of release files per channel (`--ledger PATH`).
"""
