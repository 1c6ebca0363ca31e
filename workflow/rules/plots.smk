rule plot:
    input:
        "results/aggregate/metrics.parquet",
    output:
        report(
            expand("results/plots/{figure}.png", figure=FIGURES),
            caption="../report/figures.rst",
            category="Figures",
        ),
        expand("results/plots/{figure}.pdf", figure=FIGURES),
    log:
        "results/logs/plot.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel plot --metrics {input} --out-dir {params.out_dir} "
        "--formats png pdf > {log} 2>&1"
