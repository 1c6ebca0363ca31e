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


# Dataset shift and OOD (config ensembles.shift, ensembles.ood): the test split's corrupted copies
# and the dataset's OOD sets, made once per dataset.
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
        ood=lambda wildcards: " ".join(OOD.get(wildcards.dataset, [])),
        seed=lambda wildcards: SHIFT["seed"],
        data_dir=config["data_dir"],
        download="" if config["download"] else "--no-download",
    shell:
        "python -m repel shift-data --data {input} --corruptions {params.corruptions} "
        "--severities {params.severities} --ood {params.ood} --data-dir {params.data_dir:q} {params.download} "
        "--seed {params.seed} --out {output} > {log} 2>&1"
