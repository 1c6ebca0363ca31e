rule landscape:
    input:
        data=res("data/{dataset}.pt"),
        checkpoint=get_start_checkpoint,
        weights=res("continue/{dataset}/{model}/{run}/seed{seed}/final.pt"),
        control=get_control_weights,  # the function distance to it, on the test split
    output:
        res("continue/{dataset}/{model}/{run}/seed{seed}/landscape.parquet"),
    log:
        res("logs/landscape/{dataset}/{model}/{run}/seed{seed}.log"),
    conda:
        "../../envs/repel.yaml"
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    shell:
        "python -m repel landscape --data {input.data} --checkpoint {input.checkpoint} "
        "--weights {input.weights} --run {wildcards.run} --controls {input.control} --device $REPEL_DEVICE "
        "--threads {threads} --out {output} > {log} 2>&1"


# The landscapes of a pack's runs in one job: each is a few seconds of work after a few seconds
# of start-up.
for index, (name, pack) in enumerate(PACKS.items()):
    runs = [run for run in pack["runs"] if pack["seed"] in RUNS[run]["seeds"]]  # those compared
    if len(runs) < 2:
        continue

    rule:
        name:
            f"landscape_pack_{index}"
        input:
            data=res("data/{dataset}.pt"),
            checkpoint=start_checkpoint("{dataset}", "{model}", pack["seed"], pack["runs"][0]),
            weights=[res(f"continue/{{dataset}}/{{model}}/{run}/seed{pack['seed']}/final.pt") for run in runs],
            controls=[control_weights("{dataset}", "{model}", pack["seed"], run) for run in runs],
        output:
            [res(f"continue/{{dataset}}/{{model}}/{run}/seed{pack['seed']}/landscape.parquet") for run in runs],
        log:
            res(f"logs/landscape_pack/{{dataset}}/{{model}}/{name}.log"),
        conda:
            "../../envs/repel.yaml"
        threads: config["threads"]
        resources:
            gres=get_gres(),
            mem_mb=config["resources"]["mem_mb"],
            runtime=config["resources"]["runtime"],
        params:
            runs=" ".join(runs),
            controls=get_pack_controls(runs, pack["seed"]),
        shell:
            "python -m repel landscape --data {input.data} --checkpoint {input.checkpoint} "
            "--weights {input.weights} --run {params.runs} --controls {params.controls} --device $REPEL_DEVICE "
            "--threads {threads} --out {output} > {log} 2>&1"

    workflow.ruleorder(f"landscape_pack_{index}", "landscape")


rule aggregate_landscape:
    input:
        get_landscapes(),
    output:
        res("aggregate/landscape.parquet"),
    log:
        res("logs/aggregate_landscape.log"),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel aggregate-landscape --landscapes {input} --out {output} > {log} 2>&1"


rule plot_landscape:
    input:
        landscape=res("aggregate/landscape.parquet"),
        summary=res("aggregate/summary.parquet"),  # each run's grid parameters, for the legends
    output:
        report(
            res("plots/landscape.png"),
            caption="../report/landscape.rst",
            category="Landscape",
        ),
        res("plots/landscape.pdf"),
    log:
        res("logs/plot_landscape.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        families=json.dumps(FAMILIES),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m repel plot --landscape {input.landscape} --summary {input.summary} --families {params.families:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"
