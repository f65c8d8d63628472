#!/usr/bin/env python3
"""Run mini-swe-agent 2.4.6's own agent loop on synthfleet tasks, for benchmarking.

Mirrors its batch runner (minisweagent/run/benchmarks/swebench.py, `mini-extra swebench`): the
built-in swebench.yaml config, one DockerEnvironment + DefaultAgent per rollout, all rollouts in a
ThreadPoolExecutor. Tasks come from our JSONL, the model is a local OpenAI-compatible endpoint.

Setup:  python3 -m venv ~/.cache/synthfleet/bench-venv
        ~/.cache/synthfleet/bench-venv/bin/pip install mini-swe-agent==2.4.6
Run:    ~/.cache/synthfleet/bench-venv/bin/python tests/benches/mini_swe_agent.py \
            --tasks tasks.jsonl --api-base http://127.0.0.1:8000/v1 --model NAME \
            --concurrency 2 --samples 2 --out results.json
"""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# Must be set before minisweagent / litellm are imported.
os.environ["MSWEA_SILENT_STARTUP"] = "1"  # no startup banner
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # don't fetch the cost map from GitHub
os.environ["LITELLM_OFFLINE_MODE"] = "true"  # nor any other catalog/tokenizer litellm fetches itself

import litellm  # noqa: E402
from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.config import get_config_from_spec  # noqa: E402
from minisweagent.environments import get_environment  # noqa: E402
from minisweagent.models import get_model  # noqa: E402
from minisweagent.utils.serialize import recursive_merge  # noqa: E402

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stdout
logging.getLogger("minisweagent").setLevel(logging.WARNING)  # no per-container INFO lines

containers: list[str] = []  # every container started, removed for sure at exit


def build_config(args) -> dict:
    config = recursive_merge(
        get_config_from_spec(args.config),
        {
            "agent": {"step_limit": 20, "cost_limit": 0},
            "environment": {"timeout": args.step_timeout},
            "model": {
                "model_name": f"openai/{args.model}",  # litellm's generic OpenAI-compatible provider
                "model_class": args.model_class,
                "cost_tracking": "ignore_errors",  # unknown model: cost 0 instead of RuntimeError
                "model_kwargs": {"api_base": args.api_base, "api_key": "dummy"},
            },
        },
    )
    # swebench.yaml sets BASH_ENV=/root/.bashrc to activate SWE-bench's conda env. Our images run as
    # a non-root user, so bash would print "Permission denied" into every observation, sometimes
    # ahead of the submit marker, which then goes unrecognised.
    config["environment"].get("env", {}).pop("BASH_ENV", None)
    return config


def rollout(config: dict, task: dict, sample: int) -> dict:
    start = time.monotonic()
    env = agent = None
    status, submission = None, ""
    try:
        model = get_model(config=config["model"])
        env = get_environment({**config["environment"], "image": task["image"], "cwd": task["workdir"]})
        containers.append(env.container_id)
        agent = DefaultAgent(model, env, **config["agent"])
        info = agent.run(task["problem_statement"])
        status, submission = info.get("exit_status"), info.get("submission") or ""
    except Exception as e:
        print(f"{task['instance_id']}#{sample}: {type(e).__name__}: {e}", file=sys.stderr)
        status = type(e).__name__
    finally:
        if env is not None:
            env.cleanup()  # mini-swe-agent's own: background `docker stop` (container runs with --rm)
    return {
        "instance_id": task["instance_id"],
        "sample": sample,
        "exit_status": status,
        "steps": agent.n_calls if agent else 0,
        "wall_s": round(time.monotonic() - start, 3),
        "submission_chars": len(submission),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", required=True, help="JSONL: instance_id, image, problem_statement, workdir")
    p.add_argument("--api-base", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="model name sent to the endpoint")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--samples", type=int, default=1, help="rollouts per task")
    p.add_argument("--out", required=True)
    p.add_argument("--step-timeout", type=int, default=60, help="per-command timeout (s)")
    p.add_argument("--config", default="swebench.yaml", help="mini-swe-agent config (as `mini-extra swebench -c`)")
    p.add_argument("--model-class", default="litellm", help="`litellm_textbased` for swebench_backticks.yaml")
    args = p.parse_args()

    with open(args.tasks) as f:
        tasks = [json.loads(line) for line in f if line.strip()]
    images = sorted({t["image"] for t in tasks})
    if subprocess.run(["docker", "image", "inspect", *images], capture_output=True).returncode != 0:
        sys.exit(f"missing local image(s) among {images}; refusing to let docker pull")
    config = build_config(args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C

    start = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            futures = [pool.submit(rollout, config, t, s) for t in tasks for s in range(args.samples)]
            try:
                rollouts = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        wall_s = time.monotonic() - start
    finally:
        # env.cleanup() only starts a background `docker stop`; make sure nothing outlives us.
        if containers:
            subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)

    result = {
        "wall_s": round(wall_s, 3),
        "rollouts": rollouts,
        "completed": sum(r["exit_status"] == "Submitted" for r in rollouts),
        "concurrency": args.concurrency,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
