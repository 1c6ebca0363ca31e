rule landscape:
    input:
        data="results/data/{dataset}.pt",
        checkpoint="results/base/{dataset}/{model}/seed{seed}/checkpoint.pt",
        weights="results/continue/{dataset}/{model}/{run}/seed{seed}/final.pt",
    output:
        "results/continue/{dataset}/{model}/{run}/seed{seed}/landscape.parquet",
    log:
        "results/logs/landscape/{dataset}/{model}/{run}/seed{seed}.log",
    params:
        device=config["device"],
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel landscape --data {input.data} --checkpoint {input.checkpoint} "
        "--weights {input.weights} --run {wildcards.run} --device {params.device} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule aggregate_landscape:
    input:
        get_landscapes(),
    output:
        "results/aggregate/landscape.parquet",
    log:
        "results/logs/aggregate_landscape.log",
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel aggregate-landscape --landscapes {input} --out {output} > {log} 2>&1"


rule plot_landscape:
    input:
        "results/aggregate/landscape.parquet",
    output:
        report(
            "results/plots/landscape.png",
            caption="../report/landscape.rst",
            category="Landscape",
        ),
        "results/plots/landscape.pdf",
    log:
        "results/logs/plot_landscape.log",
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel plot --landscape {input} --out-dir {params.out_dir} > {log} 2>&1"
