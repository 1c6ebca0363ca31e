rule plot_family:
    input:
        res("aggregate/metrics.parquet"),
    output:
        png=report(
            res("plots/families/{family}.png"),
            caption="../report/family.rst",
            category="Families",
            subcategory="{family}",
        ),
        pdf=res("plots/families/{family}.pdf"),
    log:
        res("logs/plot_family/{family}.log"),
    params:
        spec=lambda wildcards: json.dumps(FAMILIES[wildcards.family]),
        # for the caption: the family's block as written, and the files it came from
        block=lambda wildcards: json.dumps(config["continuation"]["families"][wildcards.family]),
        defaults=json.dumps(config["continuation"]["defaults"]),
        configfiles=CONFIG_FILES,
        out_dir=lambda wildcards, output: os.path.dirname(output.png),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel plot --metrics {input} --family {wildcards.family} --spec {params.spec:q} "
        "--out-dir {params.out_dir} --formats png pdf > {log} 2>&1"
