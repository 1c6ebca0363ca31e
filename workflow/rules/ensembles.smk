rule predict:
    # the members' predictions, the loss between consecutive members and (with shift or OOD sets)
    # the members under shift, in one process: each is a few seconds of work, about what starting a
    # job costs
    input:
        unpack(get_ensemble_inputs),
        data=res("data/{dataset}.pt"),
    output:
        **SHIFT_OUTPUTS,  # where the config asks for shift or OOD sets
        predictions=res("ensembles/{dataset}/{model}/{method}/{ensemble}/predictions.npz"),
        landscape=res("ensembles/{dataset}/{model}/{method}/{ensemble}/member_landscape.parquet"),
    log:
        res("logs/predict/{dataset}/{model}/{method}/{ensemble}.log"),
    conda:
        "../../envs/repel.yaml"
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        shift=lambda wildcards, input, output: (
            f"--shift {input.shift} --shift-out {output.shift_predictions} "
            f"--shift-table {output.shift_table} --ood-scores {output.ood_scores}"
            if ROBUSTNESS
            else ""
        ),
    shell:
        "python -m repel predict --data {input.data} --checkpoints {input.checkpoints} "
        "--members {input.members} --swa {input.swa} --method {wildcards.method} --ensemble {wildcards.ensemble} "
        "--member-landscape {output.landscape} {params.shift} --device $REPEL_DEVICE "
        "--threads {threads} --out {output.predictions} > {log} 2>&1"


rule evaluate_ensembles:
    input:
        predictions=get_predictions(),
        landscapes=get_member_landscapes(),
    output:
        curves=res("aggregate/ensembles.parquet"),
        pairs=res("aggregate/ensemble_pairs.parquet"),
        landscape=res("aggregate/member_landscape.parquet"),
        averages=res("aggregate/weight_averages.parquet"),
        summary=report(
            res("aggregate/ensemble_summary.csv"),
            caption="../report/ensemble_summary.rst",
            category="Tables",
        ),
        summary_md=res("aggregate/ensemble_summary.md"),
    log:
        res("logs/evaluate_ensembles.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output.curves),
    shell:
        "python -m repel ensembles --predictions {input.predictions} "
        "--member-landscapes {input.landscapes} --out-dir {params.out_dir} > {log} 2>&1"


rule plot_ensembles:
    input:
        curves=res("aggregate/ensembles.parquet"),
        pairs=res("aggregate/ensemble_pairs.parquet"),
        averages=res("aggregate/weight_averages.parquet"),
    output:
        report(
            expand(res("plots/{figure}.png"), figure=ENSEMBLE_FIGURES),
            caption="../report/ensembles.rst",
            category="Ensembles",
        ),
        expand(res("plots/{figure}.pdf"), figure=ENSEMBLE_FIGURES),
    log:
        res("logs/plot_ensembles.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m repel plot --ensembles {input.curves} --pairs {input.pairs} --averages {input.averages} "
        "--out-dir {params.out_dir} > {log} 2>&1"


# Dataset shift and OOD (config ensembles.shift, ensembles.ood): the predict job's members also
# predict on the corrupted test splits and the OOD sets (predict's shift outputs); one table each,
# figures.
rule shift_table:
    input:
        get_shift_tables(),
    output:
        res("aggregate/shift.parquet"),
    log:
        res("logs/shift_table.log"),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel shift-table --tables {input} --out {output} > {log} 2>&1"


rule ood_table:
    input:
        get_ood_scores(),
    output:
        res("aggregate/ood.parquet"),
    log:
        res("logs/ood_table.log"),
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel ood-table --scores {input} --out {output} > {log} 2>&1"


rule plot_shift:
    input:
        **get_robustness_tables(),
    output:
        report(
            [f for f in get_shift_outputs() if f.endswith(".png")],
            caption="../report/ensemble_shift.rst",
            category="Ensembles",
        ),
        [f for f in get_shift_outputs() if f.endswith(".pdf")],
    log:
        res("logs/plot_shift.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        configfiles=CONFIG_FILES,  # named in the report's caption
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        tables=lambda wildcards, input: " ".join(f"--{k} {v}" for k, v in input.items()),
    shell:
        "python -m repel plot-shift {params.tables} --out-dir {params.out_dir} > {log} 2>&1"
