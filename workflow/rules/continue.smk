rule continue_run:
    input:
        data=res("data/{dataset}.pt"),
        checkpoint=get_start_checkpoint,
    output:
        metrics=res("continue/{dataset}/{model}/{run}/seed{seed}/metrics.parquet"),
        weights=res("continue/{dataset}/{model}/{run}/seed{seed}/final.pt"),
    log:
        res("logs/continue_run/{dataset}/{model}/{run}/seed{seed}.log"),
    wildcard_constraints:
        run=get_run_pattern(PLAIN_RUNS),
    conda:
        "../../envs/repel.yaml"
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        spec=get_run_spec,
        optimizer=get_optimizer_args(),
        snapshot_every=get_snapshot_every,
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    shell:
        "python -m repel continue --data {input.data} --checkpoint {input.checkpoint} "
        "--spec {params.spec:q} {params.optimizer} --snapshot-every {params.snapshot_every} $REPEL_RUN_OPTIONS "
        "--threads {threads} --out-dir {params.out_dir} > {log} 2>&1"


# The runs whose snapshots are ensemble members: the same job, with every member's file declared,
# so that a lost snapshot is noticed and made again. One rule per set of member epochs: Snakemake
# outputs cannot depend on the run.
use rule continue_run as continue_run_snapshots with:
    output:
        metrics=res("continue/{dataset}/{model}/{run}/seed{seed}/metrics.parquet"),
        weights=res("continue/{dataset}/{model}/{run}/seed{seed}/final.pt"),
        snapshots=get_snapshots(SNAPSHOT_RUNS),
    wildcard_constraints:
        run=get_run_pattern(SNAPSHOT_RUNS),


use rule continue_run as continue_run_fge with:
    output:
        metrics=res("continue/{dataset}/{model}/{run}/seed{seed}/metrics.parquet"),
        weights=res("continue/{dataset}/{model}/{run}/seed{seed}/final.pt"),
        snapshots=get_snapshots(FGE_RUNS),
    wildcard_constraints:
        run=get_run_pattern(FGE_RUNS),


use rule continue_run as continue_run_swa with:
    output:
        metrics=res("continue/{dataset}/{model}/{run}/seed{seed}/metrics.parquet"),
        weights=res("continue/{dataset}/{model}/{run}/seed{seed}/final.pt"),
        snapshots=get_snapshots(SWA_RUNS),
        swa=res("continue/{dataset}/{model}/{run}/seed{seed}/swa.pt"),
    wildcard_constraints:
        run=get_run_pattern(SWA_RUNS),


# Packs (config key `pack`): the runs of one seed that share their training and differ only in the
# penalty, trained together in one process (repel.pack), one rule per pack since its outputs are
# its members' files. Where a pack and a run's own rule could both make a file, the pack does.
for index, (name, pack) in enumerate(PACKS.items()):

    rule:
        name:
            f"continue_pack_{index}"
        input:
            data=res("data/{dataset}.pt"),
            checkpoint=start_checkpoint("{dataset}", "{model}", pack["seed"], pack["runs"][0]),  # one training
        output:
            get_pack_outputs(pack),
        log:
            res(f"logs/continue_pack/{{dataset}}/{{model}}/{name}.log"),
        conda:
            "../../envs/repel.yaml"
        threads: config["threads"]
        resources:
            gres=get_gres(),
            mem_mb=config["resources"]["mem_mb"],
            runtime=config["resources"]["runtime"],
        params:
            optimizer=get_optimizer_args(),
            members=get_pack_members(pack),
            state_dir=res(f"packs/{{dataset}}/{{model}}/{name}"),
        shell:
            "python -m repel continue-pack --data {input.data} --checkpoint {input.checkpoint} {params.optimizer} "
            "--members {params.members:q} $REPEL_RUN_OPTIONS --threads {threads} --out-dir {params.state_dir} > {log} 2>&1"

    for alone in ("continue_run", "continue_run_snapshots", "continue_run_fge"):
        workflow.ruleorder(f"continue_pack_{index}", alone)
