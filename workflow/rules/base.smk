rule train_base:
    input:
        res("data/{dataset}.pt"),
    output:
        checkpoint=res("base/{dataset}/{model}/seed{seed}/checkpoint.pt"),
        metrics=res("base/{dataset}/{model}/seed{seed}/metrics.parquet"),
    log:
        res("logs/train_base/{dataset}/{model}/seed{seed}.log"),
    conda:
        "../../envs/repel.yaml"
    threads: config["threads"]
    resources:
        gres=get_gres(),
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime"],
    params:
        args=get_base_args(),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    shell:
        "python -m repel train-base --data {input} --model {wildcards.model} --seed {wildcards.seed} "
        "{params.args} $REPEL_RUN_OPTIONS --threads {threads} --out-dir {params.out_dir} > {log} 2>&1"


# The seed's initial weights as a checkpoint, for the runs with `start: init`: train-base with no
# epoch, so the weights, optimizer and data order are exactly those train_base starts from.
use rule train_base as init_base with:
    output:
        checkpoint=res("base/{dataset}/{model}/seed{seed}/init/checkpoint.pt"),
        metrics=res("base/{dataset}/{model}/seed{seed}/init/metrics.parquet"),
    log:
        res("logs/init_base/{dataset}/{model}/seed{seed}.log"),
    params:
        args=f"--epochs 0 {get_optimizer_args()}",  # no lr: the continuation sets its own
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
