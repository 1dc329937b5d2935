"""``mlbridge submit``: write a Slurm batch script for a ``coupling.toml`` and submit it.

The configuration is checked as by ``mlbridge run`` (nothing is queued when it is not fit to
run); the script asks for the model's and the servers' ranks as tasks (a heterogeneous job
with ``[slurm] server_nodes``), the nodes, GPUs, time limit, partition and account of the
``[slurm]`` table or the options, and runs ``mlbridge run CONFIG --launcher srun`` inside the
allocation. It is written to ``<run.workdir>/<config stem>.sbatch`` (``--script`` overrides),
the batch log goes to ``<run.workdir>/slurm-<jobid>.out``. Exit status: 0 submitted (or
written, ``--no-submit``); 1 sbatch refused it; 2 nothing was written (configuration problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from bridge import paths
from bridge.config.coupling import ConfigError, CouplingConfig, load_config
from bridge.launch.launcher import check_ready
from bridge.launch.rundir import LaunchError
from bridge.launch.slurm import BatchJob, SlurmError, batch_script, submit

SUMMARY = "write a Slurm batch script for a coupling.toml and submit it with sbatch"
EXAMPLES = (
    "  mlbridge submit examples/03_coupled_laplacian/coupling.toml --time 00:20:00\n"
    "  mlbridge submit coupling.toml --partition gpu --gpus-per-node 4 --no-submit\n"
)


def slurm_overrides(config: CouplingConfig, args: argparse.Namespace) -> CouplingConfig:
    """``config`` with the ``[slurm]`` options given on the command line."""
    changes = {
        key: getattr(args, key)
        for key in (
            "partition",
            "nodes",
            "time",
            "gpus_per_node",
            "account",
            "server_nodes",
            "server_partition",
        )
        if getattr(args, key) is not None
    }
    problems = [
        f"--{key.replace('_', '-')}: expected an integer >= {low}, got {changes[key]}"
        for key, low in (("nodes", 1), ("gpus_per_node", 0), ("server_nodes", 0))
        if key in changes and changes[key] < low
    ]
    if problems:
        raise ConfigError(problems, config.source)
    return dataclasses.replace(config, slurm=dataclasses.replace(config.slurm, **changes))


def batch_job(config: CouplingConfig, config_path: Path, args: argparse.Namespace) -> BatchJob:
    """The batch job that runs ``config`` (checked, overrides applied) with ``mlbridge run``."""
    command = [
        sys.executable,
        "-m",
        "bridge.cli",
        "run",
        str(config_path.resolve()),
        "--launcher",
        "srun",
        "--workdir",
        str(config.run.workdir),
        "--model-ranks",
        str(config.model.ranks),
    ]
    if config.coupled:
        command += ["--server-ranks", str(config.server.ranks)]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    if args.build_dir is not None:
        command += ["--build-dir", str(args.build_dir.resolve())]
    env: dict[str, str] = {}
    checkout = paths.checkout_root()
    if checkout is not None:  # `python -m bridge.cli` from a checkout, wherever the job starts
        env["PYTHONPATH"] = str(checkout)
    return BatchJob(
        model_ranks=config.model.ranks,
        server_ranks=config.server.ranks if config.coupled else 0,
        slurm=config.slurm,
        name=f"mlbridge-{config_path.stem}",
        command=tuple(command),
        workdir=Path.cwd(),
        output=config.run.workdir / "slurm-%j.out",
        env=env,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mlbridge submit``."""
    parser.add_argument("config", type=Path, metavar="CONFIG.toml", help="the coupling file")
    parser.add_argument("--model-ranks", type=int, metavar="N", help="overrides model.ranks")
    parser.add_argument("--server-ranks", type=int, metavar="M", help="overrides server.ranks")
    parser.add_argument("--steps", type=int, metavar="K", help="run K model steps")
    parser.add_argument("--workdir", type=Path, metavar="DIR", help="overrides run.workdir")
    parser.add_argument(
        "--build-dir", type=Path, metavar="DIR", help="where the model executable is looked up"
    )
    parser.add_argument("--partition", metavar="NAME", help="overrides slurm.partition")
    parser.add_argument("--nodes", type=int, metavar="N", help="overrides slurm.nodes")
    parser.add_argument(
        "--time", metavar="LIMIT", help="time limit, e.g. 00:30:00 (overrides slurm.time)"
    )
    parser.add_argument(
        "--gpus-per-node", type=int, metavar="G", help="overrides slurm.gpus_per_node"
    )
    parser.add_argument("--account", metavar="NAME", help="overrides slurm.account")
    parser.add_argument(
        "--server-nodes",
        type=int,
        metavar="N",
        help="servers on N nodes of their own: a heterogeneous job (overrides slurm.server_nodes)",
    )
    parser.add_argument(
        "--server-partition", metavar="NAME", help="overrides slurm.server_partition"
    )
    parser.add_argument(
        "--script", type=Path, metavar="PATH", help="where to write the batch script"
    )
    parser.add_argument(
        "--no-submit", action="store_true", help="write the script, do not call sbatch"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``mlbridge submit``; return 0 (submitted or written), 1 (sbatch refused), 2."""
    try:
        config = load_config(args.config)
        config = slurm_overrides(config, args)
        config = check_ready(
            config,
            model_ranks=args.model_ranks,
            server_ranks=args.server_ranks,
            steps=args.steps,
            workdir=args.workdir,
            build_dir=args.build_dir,
        )
        job = batch_job(config, args.config, args)
        script = args.script or config.run.workdir / f"{args.config.stem}.sbatch"
        text = batch_script(job, source=str(args.config))
        try:
            config.run.workdir.mkdir(parents=True, exist_ok=True)
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(text)
        except OSError as err:
            raise LaunchError(f"{script}: cannot write the batch script: {err.strerror}") from None
    except (ConfigError, LaunchError) as err:
        print(f"mlbridge submit: error: {err}", file=sys.stderr)
        return 2
    if args.no_submit:
        print(f"mlbridge submit: wrote {script} (submit it with: sbatch {script})")
        return 0
    try:
        job_id = submit(script, env=os.environ)
    except SlurmError as err:
        print(f"mlbridge submit: error: {err} (the script is {script})", file=sys.stderr)
        return 1
    print(f"mlbridge submit: submitted batch job {job_id} (script {script})")
    print(f"mlbridge submit: its log: {str(job.output).replace('%j', job_id)}")
    return 0
