"""Moved to coordinator/manifests.py (beside the registry; the backends here know only blobs and
documents). This name stays only while files owned by other work in progress still import it:
import from coordinator.manifests."""
from coordinator.manifests import (AdapterEntry, ModuleRecord, NetConflictError, NetManifest, commit_net,
                                   delete_module_record, list_module_records, list_net_versions, list_nets,
                                   load_latest_net, load_module_record, load_net, module_id, module_record_key,
                                   net_latest_key, net_version_key, save_module_record)

__all__ = ["AdapterEntry", "ModuleRecord", "NetConflictError", "NetManifest", "commit_net", "delete_module_record",
           "list_module_records", "list_net_versions", "list_nets", "load_latest_net", "load_module_record", "load_net",
           "module_id", "module_record_key", "net_latest_key", "net_version_key", "save_module_record"]
