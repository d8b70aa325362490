"""The sites the coordinator knows, for `admin sites`: heartbeats from the ledger, modules from the store."""

from __future__ import annotations

from common.patterns import BASE_SITE
from coordinator.ledger import Ledger
from coordinator.store import Store
from coordinator.manifests import list_module_records
from coordinator.worker import ADAPTER_SITE  # the coordinator's own adapters are not a site's
from protos.nt.v1 import control_pb2


def site_infos(ledger: Ledger, store: Store) -> list[control_pb2.SiteInfo]:
    seen = {site.site_id: site for site in ledger.list_sites()}
    by_site: dict[str, list] = {}
    for record in list_module_records(store):
        if record.site_id not in (ADAPTER_SITE, BASE_SITE):  # the coordinator's adapters, the shared bases
            by_site.setdefault(record.site_id, []).append(record)
    infos = []
    for site_id in sorted(set(seen) | set(by_site)):
        records = by_site.get(site_id, [])
        heartbeat = seen.get(site_id)
        infos.append(control_pb2.SiteInfo(
            site_id=site_id, endpoint=heartbeat.endpoint if heartbeat else "",
            last_seen=heartbeat.last_seen if heartbeat else 0.0,
            categories=sorted({r.category for r in records if r.role == "category"}),
            tasks=sorted({r.task for r in records if r.role == "task"}),
            shared_samples=max((r.num_images for r in records if r.role == "samples"), default=0)))
    return infos
