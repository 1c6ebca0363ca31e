rule landscape:
    input:
        data=res("data/{dataset}.pt"),
        checkpoint=res("base/{dataset}/{model}/seed{seed}/checkpoint.pt"),
        weights=res("continue/{dataset}/{model}/{run}/seed{seed}/final.pt"),
    output:
        res("continue/{dataset}/{model}/{run}/seed{seed}/landscape.parquet"),
    log:
        res("logs/landscape/{dataset}/{model}/{run}/seed{seed}.log"),
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel landscape --data {input.data} --checkpoint {input.checkpoint} "
        "--weights {input.weights} --run {wildcards.run} --device {DEVICE} "
        "--threads {threads} --out {output} > {log} 2>&1"


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
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        families=json.dumps(FAMILIES),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel plot --landscape {input.landscape} --summary {input.summary} --families {params.families:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"
