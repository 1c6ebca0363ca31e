rule aggregate:
    input:
        get_base_metrics(),
        get_run_metrics(),
    output:
        metrics=res("aggregate/metrics.parquet"),
        summary=report(
            res("aggregate/summary.csv"),
            caption="../report/summary.rst",
            category="Tables",
        ),
        summary_md=res("aggregate/summary.md"),
        summary_parquet=res("aggregate/summary.parquet"),
    log:
        res("logs/aggregate.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        labels=get_labels(),
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    shell:
        "python -m repel aggregate --runs {input} --labels {params.labels:q} " "--out-dir {params.out_dir} > {log} 2>&1"
