rule prepare_data:
    output:
        res("data/{dataset}.pt"),
    log:
        res("logs/prepare_data/{dataset}.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        data_dir=config["data_dir"],
        download="" if config["download"] else "--no-download",
        val_fraction=config["split"]["val_fraction"],
        test_fraction=config["split"]["test_fraction"],
        seed=config["split"]["seed"],
    shell:
        "python -m repel prepare --dataset {wildcards.dataset} --data-dir {params.data_dir:q} "
        "--val-fraction {params.val_fraction} --test-fraction {params.test_fraction} "
        "--seed {params.seed} {params.download} --out {output} > {log} 2>&1"


# Dataset shift (config ensembles.shift): the test split's corrupted copies, made once per dataset.
rule prepare_shift:
    input:
        res("data/{dataset}.pt"),
    output:
        res("shift/{dataset}.pt"),
    log:
        res("logs/prepare_shift/{dataset}.log"),
    conda:
        "../../envs/repel.yaml"
    params:
        corruptions=lambda wildcards: " ".join(SHIFT["corruptions"]),
        severities=lambda wildcards: " ".join(map(str, SHIFT["severities"])),
        seed=lambda wildcards: SHIFT["seed"],
    shell:
        "python -m repel shift-data --data {input} --corruptions {params.corruptions} "
        "--severities {params.severities} --seed {params.seed} --out {output} > {log} 2>&1"
