"""The classifier: the built-in MLP, or a team's own ``package.module:build``."""

from __future__ import annotations

from torch import nn

from mlplat.contracts.training_config import ConfigError, ModelConfig, load_callable


def build_mlp(input_dim: int, num_classes: int, hidden_sizes: list[int], dropout: float) -> nn.Sequential:
    """A plain MLP classifier producing logits.

    Built from stock ``torch.nn`` layers only, so the pickled model loads in the serving image without
    any mlplat code on the import path.
    """
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def build_model(config: ModelConfig, input_dim: int, num_classes: int) -> nn.Module:
    """Build the model named by ``config.source`` for ``input_dim`` features and ``num_classes`` classes."""
    if config.source == "mlp":
        return build_mlp(input_dim, num_classes, config.hidden_sizes, config.dropout)
    build = load_callable(config.source, "model.source")
    try:
        model = build(input_dim=input_dim, num_classes=num_classes, **config.options)
    except TypeError as error:
        raise ConfigError("model.options", [f"model.options: {config.source} rejected them: {error}"]) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            "model.source", [f"model.source: {config.source} returned {type(model).__name__}, not nn.Module"]
        )
    return model
