"""``specdeploy recommend``: the decision the policy would take now on live metrics, without acting."""

from __future__ import annotations

from collections.abc import Iterator

from ..api import GROUP, PLURAL, VERSION, SpecError, validate_spec
from ..core.evaluate import evaluate, utcnow
from .handlers import _k_label, make_clients
from .prometheus import Reader


def recommend(prometheus: str, namespace: str | None, name: str | None) -> Iterator[str]:
    clients = make_clients()
    if namespace:
        items = clients.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    else:
        items = clients.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    items = [i for i in items if name is None or i["metadata"]["name"] == name]
    if not items:
        yield "no SpeculativeDeployment found"
        return
    now = utcnow()
    checked = []
    for cr in items:
        try:
            checked.append((cr, validate_spec(cr.get("spec"))))
        except SpecError as exc:
            yield f"{cr['metadata']['namespace']}/{cr['metadata']['name']}: invalid spec: {exc.problems[0]}"
    windows = {spec.adaptive.window_seconds for _, spec in checked}
    reader = Reader(prometheus)
    for window in sorted(windows):
        members = [(cr, spec) for cr, spec in checked if spec.adaptive.window_seconds == window]
        wanted = [(cr["metadata"]["namespace"], cr["metadata"]["name"], _k_label(cr)) for cr, _ in members]
        observations = reader.read(wanted, window)
        for cr, spec in members:
            meta = cr["metadata"]
            obs = observations[(meta["namespace"], meta["name"])]
            spec = spec.model_copy(update={"adaptive": spec.adaptive.model_copy(update={"mode": "Recommend"})})
            decision, _ = evaluate(spec, cr.get("status") or {}, obs, now)
            k = (cr.get("status") or {}).get("k")
            what = (
                "nothing to decide (no speculator)" if decision is None else f"{decision.action} -> k={decision.to_k}"
            )
            reason = "" if decision is None else f": {decision.reason}"
            yield f"{meta['namespace']}/{meta['name']}: k={k}: {what}{reason}"
