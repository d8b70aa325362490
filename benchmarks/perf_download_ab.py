"""A/B of the registry's download client: another checkout's `common.registry_client` against this one's,
against one coordinator (this checkout's), alternating, in one run; prints JSON (MB/s, client and server CPU per
GB, the client's peak RSS increase per download, and the bare gRPC ceiling).

    git worktree add /tmp/old <commit>
    python -m benchmarks.perf_download_ab /tmp/old [--megabytes 500] [--rounds 3]
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks import perf_system as ps

# the benchmark's own download client, with a checkout (argv[4]) first on the path: its registry client runs
CLIENT = "import sys; sys.path.insert(0, sys.argv[4])\n" + ps.DOWNLOAD_CLIENT + (
    "assert download.__code__.co_filename.startswith(sys.argv[4]), download.__code__.co_filename\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", help="the other checkout (its client is 'before')")
    parser.add_argument("--megabytes", type=int, default=500, help="module size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="downloads per client (default: %(default)s)")
    args = parser.parse_args()
    mb, rounds = args.megabytes, args.rounds
    trees = {"before": str(Path(args.other).resolve()), "after": str(ps.ROOT)}
    results = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, weights = ps.write_big_module(tmp, mb)
        with tempfile.TemporaryDirectory(dir=ps.fast_dir()) as store_dir:
            coord, port = ps._serve(tmp, Path(store_dir) / "store")
            addr = f"127.0.0.1:{port}"
            try:
                up, _, _ = ps._sampled(ps.UPLOAD_CLIENT, coord.pid, addr, str(tmp / "big.json"), str(weights), str(ps.CHUNK))
                for _ in range(rounds):
                    for name, tree in trees.items():
                        r, crss, _ = ps._sampled(CLIENT, coord.pid, addr, up["module_id"], str(ps.CHUNK), tree)
                        results[name].append({"mb_s": r["size"] / r["seconds"] / 1e6, "client_cpu_s_per_gb": r["cpu"] / r["size"] * 1e9,
                                              "server_cpu_s_per_gb": r["server_cpu_s"] / r["size"] * 1e9, "client_peak_rss_extra_mb": crss})
                        print(name, results[name][-1], file=sys.stderr, flush=True)
            finally:
                coord.terminate()
                coord.wait()
        raw = ps.raw_grpc_figures(weights)
    print(json.dumps({"module_mb": up["size"] / 1e6, **raw, "rounds": results}, indent=1))


if __name__ == "__main__":
    main()
