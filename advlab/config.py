"""Structured-config schemas: the types of every key, registered with Hydra's ConfigStore.

Each YAML option in ``conf/`` starts its defaults list with its schema
(``- /schema_<group>_<option>@_here_``), so Hydra merges the YAML into a typed, struct-mode node:
a typo'd key, an unknown choice (enum fields) or a value of the wrong type fails at compose time,
before any data is read. Range checks (eps >= 0, 0 <= dropout < 1,
...) that types cannot express live in :mod:`advlab.validate` and run first thing in the pipeline.

This module imports nothing heavy (no torch, no mlflow) so ``python -m advlab --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from advlab import naming

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"


def _register_resolvers() -> None:
    # ${advlab.root:} lets YAML paths resolve against the project, never Hydra's run directory.
    if not OmegaConf.has_resolver("advlab.root"):
        OmegaConf.register_new_resolver("advlab.root", lambda: str(PROJECT_ROOT))


# ------------------------------------------------------------------------------ closed choices
# Each closed choice is spelled once, here. StrEnum members compare equal to their strings
# (``Scheduler.cosine == "cosine"``) and print as them, so code and MLflow params read the same
# whether a config came from Hydra (enum members) or from a plain dict (strings).
class Loss(StrEnum):
    cross_entropy = "cross_entropy"
    mse = "mse"  # on one-hot targets: the course's first loss


class Scheduler(StrEnum):
    none = "none"
    staircase = "staircase"
    cosine = "cosine"
    onecycle = "onecycle"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    auto = "auto"  # bf16 where the hardware does it natively, else fp32


class AdversarialMethod(StrEnum):
    none = "none"
    fgsm_rs = "fgsm_rs"
    nfgsm = "nfgsm"
    pgd = "pgd"
    trades = "trades"
    ibp = "ibp"


class Monitor(StrEnum):
    auto = "auto"  # val_pgd_acc under adversarial training, else val_loss (set at validation)
    val_loss = naming.VAL_LOSS  # the monitor names a per-epoch metric of the contract
    val_acc = naming.VAL_ACC
    val_pgd_acc = naming.VAL_PGD_ACC


class Mode(StrEnum):
    auto = "auto"  # the direction in which the monitor improves (set at validation)
    min = "min"
    max = "max"


class Targeted(StrEnum):
    random = "random"
    least_likely = "least_likely"


class Norm(StrEnum):
    linf = "linf"
    l2 = "l2"
    none = "none"  # unbounded attacks such as deepfool


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# ----------------------------------------------------------------------------------------- data
@dataclass
class AugmentConf:
    hflip: bool = False  # random horizontal flip (p = 0.5)
    shift: int = 0  # random shift/crop with zero padding, in pixels
    rotation: float = 0.0  # max absolute rotation, in degrees


@dataclass
class DataConf:
    name: str = MISSING  # short name used in run names and tags (mnist, gender, ...)
    loader: str = MISSING  # dotted path of the function that reads the raw splits
    # folder holding the data: absolute, or relative to where the command runs (typed on the
    # command line) or to the project root (set in conf/ or the Python API)
    root: str | None = None
    val_fraction: float = 0.1  # share of the training data held out for validation
    limit_train: int | None = None  # keep only the first N training images (after shuffling)
    limit_test: int | None = None  # keep only the first N test images
    augment: AugmentConf = field(default_factory=AugmentConf)


@dataclass
class MnistDataConf(DataConf):
    test_fraction: float = 0.2  # share of the 5,000 embedded images held out as the test set


@dataclass
class GenderDataConf(DataConf):
    root: str = MISSING  # required: the folder with data_<tag>.bin / gender_<tag>.bin
    train: str = "10k"  # tag of data_<tag>.bin / gender_<tag>.bin used for training
    test: str = "test10k"  # tag of the test files
    # column order of the one-hot labels (the course does not state it)
    class_names: list[str] = field(default_factory=lambda: ["male", "female"])


@dataclass
class Cifar10DataConf(DataConf):
    download: bool = True  # download the archive into data.root when it is absent
    url: str = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # where it comes from
    md5: str = "c58f30108f718f92721af3b95e74349a"  # the archive's checksum (the official one)


@dataclass
class FolderDataConf(DataConf):
    root: str = MISSING  # required: root/<class_name>/*.png (optionally under train/ and test/)
    image_size: int = 32  # images are resized to image_size x image_size
    channels: int = 3  # 1 = greyscale, 3 = RGB
    test_fraction: float = 0.2  # used when the folder has no train/ and test/ subfolders


# ---------------------------------------------------------------------------------------- model
@dataclass
class ModelConf:
    _target_: str = MISSING  # the function of advlab.models.zoo that builds the network
    _partial_: bool = True  # shape, class count and Normalize stats come from the data at run time
    dropout: float = 0.0  # dropout rate before the classifier layer(s); 0 = off


@dataclass
class PerceptronConf(ModelConf):
    hidden: int = 50  # hidden units (sigmoid)


@dataclass
class CourseCnnConf(ModelConf):
    filters: list[int] = field(default_factory=lambda: [3, 6, 12])  # channels of the 3 convs


@dataclass
class Lenet5Conf(ModelConf):
    pass


@dataclass
class MnistCnnConf(ModelConf):
    dropout: float = 0.5  # dropout before the classifier
    conv_dropout: float = 0.25  # dropout after the conv block


@dataclass
class VggSmallConf(ModelConf):
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels a stage, 2x2 pool
    convs_per_stage: int = 2  # 3x3 convs per stage
    batch_norm: bool = True  # batch norm after every conv
    hidden: int = 256  # units of the hidden classifier layer


@dataclass
class ResnetSmallConf(ModelConf):
    blocks_per_stage: int = 3  # 3 -> ResNet-20
    width: int = 16  # channels of the first stage, doubled at each of the 3 stages


# ------------------------------------------------------------------------------------ optimizer
@dataclass
class OptimizerConf:
    _target_: str = MISSING  # the torch.optim class
    _partial_: bool = True  # the parameter groups are given at run time
    lr: float = 1e-3  # learning rate
    weight_decay: float = 0.0  # L2 on conv/linear weights only (never biases or norm layers)


@dataclass
class SgdConf(OptimizerConf):
    _target_: str = "torch.optim.SGD"  # the torch.optim class
    lr: float = 0.01  # learning rate
    momentum: float = 0.0  # the course's plain SGD; 0.9 for CIFAR-10
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)


@dataclass
class AdamConf(OptimizerConf):
    _target_: str = "torch.optim.Adam"  # the torch.optim class
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # moment decay rates


@dataclass
class AdamWConf(AdamConf):
    _target_: str = "torch.optim.AdamW"  # the torch.optim class
    weight_decay: float = 0.01  # decoupled decay, on conv/linear weights only


# ---------------------------------------------------------------------------------------- train
@dataclass
class EarlyStoppingConf:
    enabled: bool = True  # stop when the monitored value stops improving
    monitor: Monitor = Monitor.auto  # val_pgd_acc needs adversarial validation
    mode: Mode = Mode.auto  # auto: min for losses, max for accuracies
    patience: int = 5  # epochs without improvement before stopping
    min_delta: float = 0.0  # smallest change that counts as an improvement
    restore_best: bool = True  # reload the best epoch's weights at the end


@dataclass
class SchedulerConf:
    name: Scheduler = Scheduler.none  # learning-rate schedule over the optimizer steps
    decay_rate: float = 0.75  # staircase: lr * decay_rate ** floor(step / decay_steps)
    decay_steps: int = 1000  # staircase: optimizer steps between decays
    max_lr: float | None = None  # onecycle: peak lr (default: optimizer lr)


@dataclass
class AdversarialTrainConf:
    # fgsm_rs: Wong et al. 2020; nfgsm: de Jorge et al. 2022; pgd: Madry et al. 2018; trades:
    # Zhang et al. 2019; ibp: certified training, Gowal et al. 2018; setting it alone is a
    # complete run
    method: AdversarialMethod = AdversarialMethod.none
    eps: float = 8.0  # 1/255 units
    # step size, 1/255 units; null: 1.25 eps (fgsm_rs), eps (nfgsm), 2.5 eps / steps (pgd, trades)
    alpha: float | None = None
    steps: int = 7  # pgd and trades only
    # nfgsm only: uniform start noise in [-noise * eps, noise * eps], in multiples of eps; no
    # projection, so the perturbation reaches noise * eps + alpha
    noise: float = 2.0
    beta: float = 6.0  # trades only: weight of the KL term (clean vs adversarial predictions)
    # ibp only: loss kappa * CE(clean) + (1 - kappa) * CE(worst-case logits of the eps-ball), on a
    # ramp counted in epochs and moved every optimizer step
    warmup_epochs: int = 1  # ibp only: epochs of clean training first (eps 0, kappa 1)
    ramp_epochs: int = 5  # ibp only: then eps grows 0 -> eps, kappa falls 1 -> kappa_end, linearly
    kappa_end: float = 0.5  # ibp only: the clean term's weight after the ramp (Gowal et al.: 0.5)
    val_robust: bool | None = None  # PGD accuracy on a validation subset; null: iff method != none
    val_robust_n: int = 256  # size of that subset
    val_robust_steps: int = 10  # PGD steps of that validation pass


@dataclass
class TrainConf:
    epochs: int = 10  # maximum number of epochs (early stopping may end sooner)
    batch_size: int = 64  # training examples per optimizer step
    loss: Loss = Loss.cross_entropy  # mse: on one-hot targets, the course's first loss
    scheduler: SchedulerConf = field(default_factory=SchedulerConf)
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)
    adversarial: AdversarialTrainConf = field(default_factory=AdversarialTrainConf)
    channels_last: bool = False  # memory format; faster convs on CPUs with AMX
    precision: Precision = Precision.fp32  # bf16 runs under autocast
    resume: str | None = None  # checkpoint file or run directory to continue from
    checkpoint: bool = True  # write last/best checkpoints atomically every epoch
    progress: bool = True  # progress bar (quiet when not a TTY)


# --------------------------------------------------------------------------------------- attack
@dataclass
class AttackConf:
    """An attack option; ``eps`` comes from ``eval.eps`` at run time (1/255 units)."""

    _target_: str = MISSING  # the function of advlab.attacks.zoo that builds the attack
    _partial_: bool = True  # the model and eps are given at run time
    norm: Norm = Norm.linf  # the norm eps is measured in (reported with the results)
    white_box: bool = True  # false for query-only attacks (square)


@dataclass
class FgsmConf(AttackConf):
    targeted: Targeted | None = None  # null = untargeted


@dataclass
class PgdConf(AttackConf):
    steps: int = 10  # gradient steps
    alpha: float | None = None  # step size, 1/255 units; null: 2.5 * eps / steps (Madry et al.)
    random_start: bool = True  # uniform start in the eps ball
    targeted: Targeted | None = None  # null = untargeted
    # untargeted: a point keeps the first iterate that fools it and takes no more steps (faster;
    # never a higher robust accuracy than the last iterate); false: torchattacks' loop as is
    stop_on_success: bool = True


@dataclass
class PgdL2Conf(AttackConf):
    norm: Norm = Norm.l2  # the norm eps is measured in
    steps: int = 10  # gradient steps
    l2_per_unit: float = 0.1  # L2 radius per eps-grid unit, so the grid 0..16 maps to 0..1.6
    alpha_fraction: float = 0.2  # step size as a fraction of the radius
    random_start: bool = True  # random start in the L2 ball


@dataclass
class RestartsConf(AttackConf):
    """Iterative attacks with restarts (APGD-CE, FAB)."""

    steps: int = 10  # iterations per restart
    restarts: int = 1  # independent runs from random starts; a point falls if any run breaks it


@dataclass
class ApgdCeConf(RestartsConf):
    pass


@dataclass
class FabConf(RestartsConf):
    pass


@dataclass
class SquareConf(AttackConf):
    white_box: bool = False  # query-only: no gradients, so it reaches points that mask them
    queries: int = 1000  # model queries per point and restart
    restarts: int = 1  # independent runs; a point falls if any run breaks it
    p_init: float = 0.8  # initial share of pixels changed per square (Andriushchenko et al.)


@dataclass
class CwConf(AttackConf):
    norm: Norm = Norm.l2  # minimises an L2 perturbation (eps is not its budget)
    c: float = 1.0  # weight of the misclassification term against the L2 distance
    kappa: float = 0.0  # confidence margin of the misclassification (0 = just across)
    steps: int = 50  # Adam steps
    lr: float = 0.01  # Adam learning rate, pixel units


class AutoattackVersion(StrEnum):
    standard = "standard"  # APGD-CE, APGD-T, FAB-T, Square (needs 4+ classes)
    plus = "plus"
    rand = "rand"  # for randomised defences (needs 3+ classes)


@dataclass
class DeepfoolConf(AttackConf):
    norm: Norm = Norm.none  # unbounded: minimal perturbation, reported as L2
    steps: int = 50  # maximum linearisation steps
    overshoot: float = 0.02  # step past the boundary so the example really flips


@dataclass
class AutoattackConf(AttackConf):
    version: AutoattackVersion = AutoattackVersion.standard  # DLR parts: refused below 4 classes


# ----------------------------------------------------------------------------------------- eval
@dataclass
class SanityConf:
    convergence_n: int = 128  # examples for the "PGD with twice the steps" check
    convergence_eps: float = 8.0  # eps (1/255) for that check
    tolerance: float = 0.01  # accuracy tolerance for monotonicity / PGD <= FGSM checks
    chance_margin: float = 0.1  # warn if robust acc at the largest eps exceeds chance + margin


class EscalationAttack(StrEnum):
    square = "square"  # torchattacks Square, black-box: reaches points whose gradient is zero
    pgd_restarts = "pgd_restarts"  # cross-entropy PGD from `restarts` random starts


class MarginAttack(StrEnum):
    auto = "auto"  # APGD-T (targeted DLR) on 4+ classes, APGD-DLR on 3, logit-margin PGD on 2
    autoattack = "autoattack"  # torchattacks AutoAttack standard on 4+ classes (else as auto)
    none = "none"  # no margin attack


class Certify(StrEnum):
    ibp = "ibp"  # interval bounds: about two forward passes per eps (advlab.certify)
    crown = "crown"  # linear bounds: tighter on normally trained models, one backward per class
    none = "none"  # no certified lower bound


@dataclass
class EscalationConf:
    """After the main attacks: a margin-loss attack on the points they left robust, and a
    black-box / restarted re-attack of the robust points a gradient-masking indicator flags."""

    enabled: bool = True  # false: the main attacks only (no margin attack, no re-attack)
    # re-attack of the robust points a gradient-masking indicator flags
    attacks: list[EscalationAttack] = field(
        default_factory=lambda: [EscalationAttack.square, EscalationAttack.pgd_restarts]
    )
    queries: int = 1000  # square: model queries per point
    restarts: int = 5  # pgd_restarts: random starts per point
    steps: int = 20  # pgd_restarts: steps per start
    max_points: int = 256  # flagged points re-attacked per eps, at most (the first ones)
    # true: re-attack every point still robust, not only the flagged ones (eval=thorough)
    reattack_all: bool = False
    margin: MarginAttack = MarginAttack.auto  # the margin-loss attack on the points left robust
    margin_steps: int = 20  # iterations of the margin attack (per target for APGD-T)
    margin_targets: int = 1  # APGD-T: target classes, most likely first (AutoAttack: 9)
    margin_eps: list[float] | None = None  # eps (1/255) it runs at; null = every eps of eval.eps


@dataclass
class EvalConf:
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])  # options of attacks.*
    # perturbation budgets, 1/255 units (L-inf); eps 0 gives the clean accuracy
    eps: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    n_examples: int | None = 1000  # fixed seeded subset of the test set; null = all
    batch_size: int = 256  # test points per attack call
    cascade: bool = True  # reuse a point's adversarial example from the next smaller eps
    grid_eps: float | None = 8.0  # eps (1/255) of the adversarial-example grids; null = none
    grid_n: int = 8  # examples per grid
    save_adversarial: bool = False  # save the adversarial sets as .npz
    transfer_from: list[str] = field(default_factory=list)  # runs or checkpoints to craft on
    transfer_required: bool = False  # refuse an empty transfer_from (+experiment=transfer sets it)
    sanity: SanityConf = field(default_factory=SanityConf)
    escalation: EscalationConf = field(default_factory=EscalationConf)
    # certified lower bound at every eps, beside the attacks' upper bound (the bracket)
    certify: Certify = Certify.ibp
    # convolution weights in channels_last memory format while evaluating: 1.3-2.6x faster PGD
    # steps on CPUs; the same arithmetic up to float rounding
    channels_last: bool = True


# ------------------------------------------------------------------------------ tracking/report
@dataclass
class TrackingConf:
    enabled: bool = True  # false: no MLflow run (files in the run directory only)
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<project>/runs/mlflow.db
    experiment: str = "quickstart"  # MLflow experiment (conf/: the data name; experiments: theirs)
    run_name: str | None = None  # null: derived from data, model and overfitting controls
    artifact_root: str | None = None  # null: <project>/runs/mlartifacts (new experiments only)
    log_model: bool = True  # log the state dict + the config to rebuild it
    stale_after_s: float | None = 86400.0  # RUNNING run of another host with no heartbeat: KILLED


class PerRun(StrEnum):
    best_worst = "best_worst"  # a sweep report's per-run pages for its best and worst setting
    all = "all"  # for every run
    none = "none"  # for no run (the comparison only)


@dataclass
class ReportConf:
    enabled: bool = True  # build a single-run PDF at the end of every run
    dir: str = "reports"  # absolute, or relative to the project root
    experiment: str | None = None  # python -m advlab.report: experiment to report on
    runs: Any = None  # python -m advlab.report: list of run ids, or an MLflow filter string
    heatmap_eps: float | None = None  # eps (1/255) of sweep heatmaps; null = the largest
    per_run: PerRun = PerRun.best_worst  # sweep reports: whose grids/per-class/confusion pages
    figures_dir: str | None = None  # also write each figure as a PNG there (slides, web pages)


# --------------------------------------------------------------------------------------- search
class ParamType(StrEnum):
    float = "float"  # a number in [low, high] (log: sampled on a log scale)
    int = "int"  # a whole number in [low, high]
    categorical = "categorical"  # one of choices (numbers, strings, booleans; options of a group)


class Sampler(StrEnum):
    tpe = "tpe"  # Optuna's TPE (multivariate), constraint-aware; random for its first trials
    nsga2 = "nsga2"  # Optuna's NSGA-II (genetic), constraint-aware
    random = "random"  # independent uniform draws: the baseline any sampler should beat


@dataclass
class SearchParamConf:
    """One searched key of ``search.space``: a range or a list of choices."""

    type: ParamType = ParamType.float  # float | int: a range from low to high; categorical: choices
    low: float | None = None  # float | int: the smallest value tried (inclusive)
    high: float | None = None  # float | int: the largest value tried (inclusive)
    log: bool = False  # float | int: sample on a log scale (low > 0); weight decay, learning rate
    choices: list[Any] | None = None  # categorical: the values tried


@dataclass
class SearchConf:
    """``python -m advlab.search``: an Optuna study over config keys; each trial is advlab runs."""

    n_trials: int = 20  # trials in total, counting those the study already holds (resume)
    study: str | None = None  # the Optuna study's name; null: tracking.experiment
    # Optuna storage URL (sqlite:///..., postgresql://...); null: optuna.db beside the MLflow
    # SQLite store (an MLflow server needs an explicit URL)
    storage: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])  # each trial runs once per seed
    min_clean: float = 0.5  # constraint: mean clean accuracy of a feasible trial, at least
    # the maximised metric, mean over seeds (clean_acc, robust_acc/<attack>/eps_<e>); null: the
    # worst case at the headline eps (eval.grid_eps if evaluated, else the largest eps)
    objective: str | None = None
    # searched key -> its range or choices; conf/search/default.yaml: dropout and weight decay
    space: dict[str, SearchParamConf] = field(default_factory=dict)
    sampler: Sampler = Sampler.tpe  # how the next trial's settings are chosen
    workers: int = 1  # local worker processes sharing the study (set threads=1 when > 1)
    report: bool = True  # PDF of the study (Pareto front, best trial, importances) at the end


@dataclass
class AuditConf:
    run: str | None = None  # python -m advlab.audit: a run directory or an MLflow run id
    report: bool = True  # rebuild the run's PDF with its "Audit" section and attach it


@dataclass
class LeaderboardConf:
    experiments: Any = None  # python -m advlab.leaderboard: a name or a list; null = every one
    eps: float | None = None  # eps (1/255) ranked at; null = the eps reports quote (eval.grid_eps)
    escalation: bool = True  # rank the runs evaluated with eval.escalation.enabled equal to this
    min_clean: float = 0.0  # clean-accuracy floor (fraction): runs below it are listed apart
    top: int | None = None  # ranked rows shown per data set, at most; null = all
    dir: str = "reports"  # CSV, markdown and PDF land here (absolute, or relative to the project)


@dataclass
class PathsConf:
    root: str = "${advlab.root:}"  # the project folder (where conf/ is)
    runs_dir: str = "${paths.root}/runs"  # run directories and the default MLflow store
    cache_dir: str = "${paths.root}/data"  # downloads (CIFAR-10) land here; git-ignored


@dataclass
class Config:
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    train: TrainConf = MISSING
    attacks: dict[str, Any] = field(default_factory=dict)
    eval: EvalConf = MISSING
    tracking: TrackingConf = MISSING
    report: ReportConf = MISSING
    audit: AuditConf = field(default_factory=AuditConf)
    search: SearchConf = field(default_factory=SearchConf)
    leaderboard: LeaderboardConf = field(default_factory=LeaderboardConf)
    paths: PathsConf = field(default_factory=PathsConf)
    seed: int = 0  # every random generator (split, init, batches, attack starts) derives from it
    device: Device = Device.auto  # auto: CUDA when available, else the CPU
    threads: int | None = None  # torch CPU threads; null = one per core (set 1 in parallel sweeps)


_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "mnist": MnistDataConf,
        "gender": GenderDataConf,
        "cifar10": Cifar10DataConf,
        "folder": FolderDataConf,
    },
    "model": {
        "perceptron": PerceptronConf,
        "course_cnn": CourseCnnConf,
        "lenet5": Lenet5Conf,
        "mnist_cnn": MnistCnnConf,
        "vgg_small": VggSmallConf,
        "resnet_small": ResnetSmallConf,
    },
    "optimizer": {"sgd": SgdConf, "adam": AdamConf, "adamw": AdamWConf},
    "train": {"default": TrainConf},
    "attack": {
        "fgsm": FgsmConf,
        "pgd": PgdConf,
        "pgd_l2": PgdL2Conf,
        "apgd_ce": ApgdCeConf,
        "fab": FabConf,
        "square": SquareConf,
        "cw": CwConf,
        "deepfool": DeepfoolConf,
        "autoattack": AutoattackConf,
    },
    "eval": {"default": EvalConf},
    "tracking": {"default": TrackingConf},
    "report": {"default": ReportConf},
    "audit": {"default": AuditConf},
    "search": {"default": SearchConf},
    "leaderboard": {"default": LeaderboardConf},
}


def experiment_names(data: str | None = None) -> list[str]:
    """Sorted names of the experiments in ``conf/experiment/`` (``+experiment=<name>``).

    With ``data``, only those whose data option is ``data`` (``override /data: gender`` in the
    experiment's defaults list or in one of the experiments it builds on). Scripts and tests take
    the list from here, so a new experiment file is run and tested without editing them.
    """
    names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    if data is None:
        return names
    return [name for name in names if experiment_option(name, "data") == data]


def experiment_option(name: str, group: str) -> str | None:
    """The ``group`` option an experiment picks (``override /<group>: <option>``), its own or the
    one of the first experiment it builds on that picks one; None when none does."""
    for entry in _experiment_defaults(name):
        if isinstance(entry, dict) and f"override /{group}" in entry:
            return str(entry[f"override /{group}"])
    for parent in _experiment_defaults(name):
        if isinstance(parent, str) and parent != "_self_":
            option = experiment_option(parent, group)
            if option is not None:
                return option
    return None


def experiment_sweeps(name: str) -> bool:
    """Whether an experiment (or one it builds on) is a sweep (``hydra.sweeper.params``): it is
    run with ``-m``."""
    node = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml")
    if OmegaConf.select(node, "hydra.sweeper.params"):
        return True
    parents = [p for p in _experiment_defaults(name) if isinstance(p, str) and p != "_self_"]
    return any(experiment_sweeps(parent) for parent in parents)


def _experiment_defaults(name: str) -> list[Any]:
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return list(node.get("defaults") or [])


def schema_name(group: str, option: str) -> str:
    """ConfigStore name of an option's schema; its YAML starts with ``- /<name>@_here_``."""
    return f"schema_{group}_{option}"


def register_configs() -> None:
    """Register the schemas (idempotent). Called on import of :mod:`advlab.__main__` and tests.

    The schemas are stored outside every config group (at the root of the ConfigStore, as
    ``schema_<group>_<option>``), so ``--help`` and Hydra's group listings show only options a
    user may pick; each YAML option pulls its schema in with ``- /schema_<group>_<option>@_here_``.
    """
    _register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="advlab_schema", node=Config)
    for group, options in _SCHEMAS.items():
        for option, node in options.items():
            cs.store(name=schema_name(group, option), node=node)


register_configs()
