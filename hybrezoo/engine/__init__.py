"""The training engine: recipes, the trainer loop, stages (the methods' extension point),
distillation, checkpoints and evaluation, sets of runs (:mod:`hybrezoo.engine.sets`: order, lockstep,
time budgets). ``hybrezoo train`` / ``hybrezoo eval`` drive it."""
from .checkpoint import load_state_dict, load_weights
from .distill import kd_loss, load_teacher
from .evaluate import evaluate
from .recipe import DEFAULTS, Recipe, RecipeError, load_recipe, stage_section
from .run import RunSpec, build_data, build_model, default_out_dir, find_recipe, run_lockstep, run_recipe
from .runtime import RunEnv, init_env
from .stop import RunStopped, StopRequest, parse_duration
from .stages import StageContext, StageKind, get_stage, register_stage, stage_kinds
from .trainer import Callback, FitResult, RunData, StepInfo, Trainer

__all__ = [
    "DEFAULTS", "Recipe", "RecipeError", "load_recipe", "stage_section",
    "run_recipe", "run_lockstep", "RunSpec", "build_model", "build_data", "default_out_dir", "find_recipe",
    "StopRequest", "RunStopped", "parse_duration",
    "StageContext", "StageKind", "register_stage", "get_stage", "stage_kinds",
    "Trainer", "Callback", "StepInfo", "FitResult", "RunData",
    "RunEnv", "init_env", "evaluate", "kd_loss", "load_teacher", "load_state_dict", "load_weights",
]
