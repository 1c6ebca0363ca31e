rule aggregate:
    input:
        get_base_metrics(),
        get_run_metrics(),
    output:
        metrics="results/aggregate/metrics.parquet",
        summary=report(
            "results/aggregate/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
        summary_md="results/aggregate/summary.md",
        summary_parquet="results/aggregate/summary.parquet",
    log:
        "results/logs/aggregate.log",
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        labels=get_labels(),
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel aggregate --runs {input} --labels {params.labels:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"
