rule claims:
    input:
        unpack(get_claims_inputs),
    output:
        csv=report(
            res("aggregate/claims.csv"),
            caption="../report/claims.rst",
            category="Claims",
        ),
        parquet=res("aggregate/claims.parquet"),
        md=res("aggregate/claims.md"),
    log:
        res("logs/claims.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        families=json.dumps(FAMILIES),
        settings=json.dumps(config["claims"]),
        ensembles=lambda wildcards, input: f"--ensembles {input.ensembles} --pairs {input.pairs}" if ENSEMBLES else "",
        landscape=lambda wildcards, input: f"--landscape {input.landscape}" if config["landscape"] else "",
        robustness=lambda wildcards, input: " ".join(f"--{k} {input[k]}" for k in get_robustness_tables()),
        out_dir=lambda wildcards, output: os.path.dirname(output.csv),
    shell:
        "python -m repel claims --metrics {input.metrics} {params.ensembles} {params.landscape} {params.robustness} "
        "--families {params.families:q} "
        "--settings {params.settings:q} --out-dir {params.out_dir} > {log} 2>&1"


rule plot_claims:
    input:
        res("aggregate/claims.parquet"),
    output:
        report(
            res("plots/claims.png"),
            caption="../report/claims_figure.rst",
            category="Claims",
        ),
        res("plots/claims.pdf"),
    log:
        res("logs/plot_claims.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m repel plot --claims {input} --out-dir {params.out_dir} > {log} 2>&1"
