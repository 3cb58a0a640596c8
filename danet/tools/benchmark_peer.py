"""The side-by-side part of the benchmark: PaddleSeg 2.8.0's DANet timed by its own script, alternating with ours.

The script (``peer_paddleseg.py`` beside this module) runs in the PaddleSeg venv's Python (``make peer-venv``)
and prints one JSON line:
the median seconds of a training step (batch 2, crop x crop) and of a forward pass at 2 crop x 2 crop. Each
thread setting runs ours, then theirs, ``--peer_rounds`` times; the best of each side is compared.
"""
import copy
import json
import logging
import os
import subprocess
import time

from danet.tools.benchmark import child_env, measure

log = logging.getLogger(__name__)

PEER_SCRIPT_ENV = "DANET_PEER_SCRIPT"
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_paddleseg.py")

def find_peer_script(path=None):
    from danet.errors import UserError

    candidates = [path] if path else [os.environ.get(PEER_SCRIPT_ENV), PEER_SCRIPT]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise UserError(f"peer script not found (tried {[c for c in candidates if c]}): give --peer_script PATH")


def measure_peer(python, script, crop, steps, env=None):
    """The PaddleSeg script's JSON line: its train step and 2*crop forward, run by the peer venv's Python."""
    start = time.time()
    proc = subprocess.run([python, script, str(crop), str(steps)], env=child_env(env), capture_output=True,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join([line for line in proc.stderr.splitlines() if line.strip()][-3:])
        log.error("peer failed (exit %d): %s", proc.returncode, tail)
        return {"error": tail, "exit_code": proc.returncode}
    result = json.loads(lines[-1])
    eval_s = result[f"eval_fwd_s_median_{2 * crop}"]
    result.update(images_per_s_train=result["train_img_per_s"], images_per_s_eval=1 / eval_s,
                  wall_s=round(time.time() - start, 1))
    log.info("peer: train %.3f img/s, eval %.3f img/s", result["images_per_s_train"], result["images_per_s_eval"])
    return result


# The two settings of the comparison: each side's defaults, and both on two math threads.
SETTINGS = {
    "default threads": ({"OMP_NUM_THREADS": None}, 0),
    "2 threads": ({"OMP_NUM_THREADS": "2"}, 2),
}


def compare_with_peer(args):
    """Alternate ours and PaddleSeg's at the same shapes, per thread setting; returns {setting: rows}."""
    script = find_peer_script(args.peer_script)
    ours_names = [n for n in ("train_dygraph", "train_static", "eval_whole") if n in args.only]
    runs = {setting: {"ours": [], "peer": []} for setting in SETTINGS}
    for _ in range(args.peer_rounds):
        for setting, (env, threads) in SETTINGS.items():
            ours_args = copy.copy(args)
            ours_args.threads = threads
            log.info("--- %s: ours", setting)
            runs[setting]["ours"].append({n: measure(n, ours_args, env) for n in ours_names})
            log.info("--- %s: PaddleSeg", setting)
            runs[setting]["peer"].append(measure_peer(args.peer, script, args.crop_size, args.peer_steps, env))
    return {setting: dict(_ratios(r["ours"], r["peer"]), runs=r) for setting, r in runs.items()}


def _best(results, key):
    values = [r[key] for r in results if key in r]
    return max(values) if values else None


def _ratios(ours_runs, peer_runs):
    """Best images/s of each side over the rounds, and ours / theirs."""
    peer_train, peer_eval = _best(peer_runs, "images_per_s_train"), _best(peer_runs, "images_per_s_eval")
    rows = {}
    for name, peer in (("train_dygraph", peer_train), ("train_static", peer_train), ("eval_whole", peer_eval)):
        ours = _best([run[name] for run in ours_runs if name in run], "images_per_s")
        if ours is not None and peer:
            rows[name] = {"ours_images_per_s": ours, "peer_images_per_s": peer, "ratio": ours / peer}
    return {"rows": rows}
