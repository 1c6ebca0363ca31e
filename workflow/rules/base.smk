rule train_base:
    input:
        "results/data/{dataset}.pt",
    output:
        checkpoint="results/base/{dataset}/{model}/seed{seed}/checkpoint.pt",
        metrics="results/base/{dataset}/{model}/seed{seed}/metrics.parquet",
    log:
        "results/logs/train_base/{dataset}/{model}/seed{seed}.log",
    params:
        args=get_base_args(),
        device=config["device"],
        save_every=config["save_every"],
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    conda:
        "../../envs/repel.yaml"
    shell:
        "python -m repel train-base --data {input} --model {wildcards.model} --seed {wildcards.seed} "
        "{params.args} --device {params.device} --save-every {params.save_every} --threads {threads} --out-dir {params.out_dir} "
        "> {log} 2>&1"
