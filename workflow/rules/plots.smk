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
    conda:
        "../../envs/repel.yaml"
    params:
        spec=lambda wildcards: json.dumps(FAMILIES[wildcards.family]),
        # for the caption: the family's block as written, and the files it came from
        block=lambda wildcards: json.dumps(config["continuation"]["families"][wildcards.family]),
        defaults=json.dumps(config["continuation"]["defaults"]),
        configfiles=CONFIG_FILES,
        out_dir=lambda wildcards, output: os.path.dirname(output.png),
    shell:
        "python -m repel plot --metrics {input} --family {wildcards.family} --spec {params.spec:q} "
        "--out-dir {params.out_dir} --formats png pdf > {log} 2>&1"


# The report's method section: the kernels as the runs felt them, and the hill on a 2-D loss (in
# get_final_outputs). A list, not a function: snakemake --lint wants functions in common.smk only.
# function_vs_weights comes with the kernels figure (rule plot_kernels).
METHOD_FIGURES = expand(
    res("plots/{figure}.{ext}"), figure=["kernels", "hill_2d", "function_vs_weights"], ext=["png", "pdf"]
)


rule plot_kernels:
    input:
        res("aggregate/metrics.parquet"),  # the settings that ran and the distances they reached
    output:
        report(
            res("plots/kernels.png"),
            caption="../report/kernels.rst",
            category="Method",
            labels={"figure": "1. the kernels as the runs felt them"},  # first in the section
        ),
        res("plots/kernels.pdf"),
        # here, not in a rule of its own: the default config gets no new job
        report(
            res("plots/function_vs_weights.png"),
            caption="../report/function_vs_weights.rst",
            category="Function vs weights",
        ),
        res("plots/function_vs_weights.pdf"),
    log:
        res("logs/plot_kernels.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "(python -m repel plot-method --metrics {input} --out-dir {params.out_dir} && "
        "python -m repel plot --function {input} --out-dir {params.out_dir} --formats png pdf) > {log} 2>&1"


rule plot_hill_2d:  # needs no data: a stated 2-D loss, seconds
    output:
        report(
            res("plots/hill_2d.png"),
            caption="../report/hill_2d.rst",
            category="Method",
            labels={"figure": "2. the hill on a 2-D loss"},
        ),
        res("plots/hill_2d.pdf"),
    log:
        res("logs/plot_hill_2d.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m repel plot-method --hill --out-dir {params.out_dir} > {log} 2>&1"
