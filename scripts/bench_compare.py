"""Old build vs new build from several `bench.sh --results DIR` runs of each.

Each run's ratio is model-manager's median wall over the best anchor's median wall of
the *same* run (as bench.sh computes it): the disk's speed drifts between runs and the
anchors drift with it. The table gives the median of those per-run ratios, and medians
of wall, CPU s/GiB and peak RSS over all runs.

  python3 scripts/bench_compare.py --old DIR [DIR ...] --new DIR [DIR ...]
"""
import argparse
import json
import os
import statistics


def med(xs):
    return statistics.median(xs) if xs else None


def per_run(result_dir):
    """(case, tool) → the run's ratio, wall, CPU s/GiB and RSS samples."""
    path = os.path.join(result_dir, "last-run.json")
    if not os.path.exists(path):
        return {}
    rows = json.load(open(path))["rows"]
    best = {}
    for r in rows:
        w = med([x["wall"] for x in r["runs"] if x.get("ok")])
        if r["anchor"] and w and (r["case"] not in best or w < best[r["case"]]):
            best[r["case"]] = w
    out = {}
    for r in rows:
        if "model-manager" not in r["tool"]:
            continue
        ok = [x for x in r["runs"] if x.get("ok")]
        w = med([x["wall"] for x in ok])
        gib = r.get("gib")
        out[(r["case"], r["tool"])] = {
            "ratio": [w / best[r["case"]]] if w and r["case"] in best else [],
            "wall": [w] if w else [],
            "cpu": [x["cpu"] / gib for x in ok if gib and x.get("cpu") is not None],
            "rss": [x["rss_mib"] for x in ok if x.get("rss_mib")],
        }
    return out


def gather(dirs):
    acc = {}
    for d in dirs:
        for k, v in per_run(d).items():
            e = acc.setdefault(k, {"ratio": [], "wall": [], "cpu": [], "rss": []})
            for field, xs in v.items():
                e[field] += xs
    return acc


def fmt(v, nd=3):
    return "—" if v is None else f"{v:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", nargs="+", required=True)
    ap.add_argument("--new", nargs="+", required=True)
    a = ap.parse_args()
    old, new = gather(a.old), gather(a.new)
    print("| case | tool | old ratio | new ratio | change | old wall s | new wall s "
          "| old CPU s/GiB | new CPU s/GiB | old RSS MiB | new RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in sorted(set(old) & set(new)):
        o, n = old[k], new[k]
        ro, rn = med(o["ratio"]), med(n["ratio"])
        change = f"{(rn / ro - 1) * 100:+.1f} %" if ro and rn else "—"
        print(f"| {k[0]} | {k[1]} | {fmt(ro)} | {fmt(rn)} | {change} "
              f"| {fmt(med(o['wall']))} | {fmt(med(n['wall']))} "
              f"| {fmt(med(o['cpu']), 2)} | {fmt(med(n['cpu']), 2)} "
              f"| {fmt(med(o['rss']), 1)} | {fmt(med(n['rss']), 1)} |")


if __name__ == "__main__":
    main()
