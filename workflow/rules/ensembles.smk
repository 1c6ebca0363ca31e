rule predict:
    input:
        unpack(get_ensemble_inputs),
        data="results/data/{dataset}.pt",
    output:
        "results/ensembles/{dataset}/{model}/{method}/predictions.pt",
    log:
        "results/logs/predict/{dataset}/{model}/{method}.log",
    params:
        members=get_ensemble_members,
        device=config["device"],
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel predict --data {input.data} --checkpoint {input.checkpoint} "
        "--members {params.members} --method {wildcards.method} --device {params.device} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule member_landscape:
    input:
        unpack(get_ensemble_inputs),
        data="results/data/{dataset}.pt",
    output:
        "results/ensembles/{dataset}/{model}/{method}/member_landscape.parquet",
    log:
        "results/logs/member_landscape/{dataset}/{model}/{method}.log",
    params:
        members=get_ensemble_members,
        device=config["device"],
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel landscape --between --data {input.data} --checkpoint {input.checkpoint} "
        "--weights {params.members} --run {wildcards.method} --device {params.device} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule evaluate_ensembles:
    input:
        predictions=get_predictions(),
        landscapes=get_member_landscapes(),
    output:
        curves="results/aggregate/ensembles.parquet",
        pairs="results/aggregate/ensemble_pairs.parquet",
        landscape="results/aggregate/member_landscape.parquet",
        summary=report(
            "results/aggregate/ensemble_summary.csv",
            caption="../report/ensemble_summary.rst",
            category="Tables",
        ),
        summary_md="results/aggregate/ensemble_summary.md",
    log:
        "results/logs/evaluate_ensembles.log",
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output.curves),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel ensembles --predictions {input.predictions} "
        "--member-landscapes {input.landscapes} --out-dir {params.out_dir} > {log} 2>&1"


rule plot_ensembles:
    input:
        curves="results/aggregate/ensembles.parquet",
        pairs="results/aggregate/ensemble_pairs.parquet",
    output:
        report(
            expand("results/plots/{figure}.png", figure=ENSEMBLE_FIGURES),
            caption="../report/ensembles.rst",
            category="Ensembles",
        ),
        expand("results/plots/{figure}.pdf", figure=ENSEMBLE_FIGURES),
    log:
        "results/logs/plot_ensembles.log",
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel plot --ensembles {input.curves} --pairs {input.pairs} "
        "--out-dir {params.out_dir} > {log} 2>&1"
