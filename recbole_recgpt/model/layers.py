"""The GPT backbone shared by the trained model and its frozen prompt writer."""

import torch
from torch import nn

from recbole.model.layers import TransformerEncoder

from recbole_recgpt.errors import ConfigError, check_choice, check_integer, check_positive_number, check_probability

# What RecBole's TransformerEncoder reads: RecGPT's backbone, and SASRec's and BERT4Rec's.
TRANSFORMER_SIZES = ("n_layers", "n_heads", "hidden_size", "inner_size")
TRANSFORMER_DROPOUTS = ("hidden_dropout_prob", "attn_dropout_prob")
TRANSFORMER_ACTIVATIONS = ("gelu", "relu", "swish", "tanh", "sigmoid")  # FeedForward.get_hidden_act's


def check_transformer_config(config):
    """Raise :class:`ConfigError` for a transformer that cannot be built or would train
    nothing (a width of 0 trains silently to chance-level numbers); a config without these
    keys (GRU4Rec, Pop) is not checked."""
    if any(config[key] is None for key in (*TRANSFORMER_SIZES, *TRANSFORMER_DROPOUTS, "hidden_act", "layer_norm_eps")):
        return
    for key in TRANSFORMER_SIZES:
        check_integer(key, config[key], 1)
    if config["hidden_size"] % config["n_heads"]:
        raise ConfigError(
            f"hidden_size={config['hidden_size']} is not divisible by n_heads={config['n_heads']}; "
            "choose values where it is"
        )
    for key in TRANSFORMER_DROPOUTS:
        check_probability(key, config[key])
    check_choice("hidden_act", config["hidden_act"], TRANSFORMER_ACTIVATIONS)
    check_positive_number("layer_norm_eps", config["layer_norm_eps"])


class ItemGPT(nn.Module):
    """Causal transformer over item-id tokens with tied input/output item embeddings.

    Input embedding = item + position + segment (+ user, optional). RecBole's
    ``TransformerEncoder`` is post-LayerNorm, like the RecGPT reference code.
    """

    def __init__(self, n_items, n_positions, n_users, config):
        super().__init__()
        hidden_size = config["hidden_size"]
        # Sparse: a backward pass sends gradients to the rows it looked up only (sampled losses).
        self.item_embedding = nn.Embedding(n_items, hidden_size, padding_idx=0, sparse=config["sparse_item_gradients"])
        self.position_embedding = nn.Embedding(n_positions, hidden_size)
        self.segment_embedding = nn.Embedding(2, hidden_size)
        self.user_embedding = nn.Embedding(n_users, hidden_size) if config["user_embedding"] else None
        self.trm_encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=hidden_size,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])

    def forward(self, item_seq, segment_ids, attention_mask, user_ids=None, position_ids=None):
        """``[B, T]`` tokens -> ``[B, T, H]`` hidden states; position t sees tokens 0..t.

        ``position_ids`` ``[B, T]`` defaults to each token's index in the sequence.
        """
        emb = self.embed(item_seq, segment_ids, user_ids, position_ids)
        return self.trm_encoder(emb, attention_mask, output_all_encoded_layers=False)[-1]

    def states_at(self, item_seq, segment_ids, attention_mask, index, user_ids=None, position_ids=None):
        """The hidden state :meth:`forward` gives at ``index`` (``[B]``) of each row, ``[B, H]``,
        and every layer's input (``n_layers`` tensors ``[B, T, H]``, for :meth:`continue_from`).

        A ranking reads one position of each row: the last layer runs for that query alone,
        over the keys and values of every token it sees, which skips most of that layer.
        """
        hidden = self.embed(item_seq, segment_ids, user_ids, position_ids)
        layers = self.trm_encoder.layer
        inputs = [hidden]
        for layer in layers[:-1]:
            hidden = layer(hidden, attention_mask)
            inputs.append(hidden)
        rows = torch.arange(len(index), device=index.device)
        query = hidden[rows, index].unsqueeze(1)
        # The query's row of RecBole's additive mask ([B, 1, T, T] -> [B, 1, 1, T]).
        bias = attention_mask[rows, :, index].unsqueeze(2)
        last = layers[-1]
        return last.feed_forward(_attend(last.multi_head_attention, query, hidden, bias)).squeeze(1), inputs

    def continue_from(self, layer_inputs, seen, item_seq, segment_ids, position_ids, user_ids=None):
        """Hidden states ``[B, E, H]`` of ``E`` tokens that follow earlier ones: what :meth:`forward`
        gives at their places in the whole sequence, computed for the new tokens alone.

        ``layer_inputs``: from :meth:`states_at` of the earlier sequence (``[B, T, H]`` each);
        ``seen``: ``[B, T]``, the earlier tokens the new ones attend to (a row's prefix, not its
        padding); ``item_seq``, ``segment_ids``, ``position_ids``: ``[B, E]`` the new tokens.
        Causal attention lets the earlier tokens' states stand: each layer attends from the new
        tokens to the earlier tokens' keys and values and to their own, earlier ones first.
        """
        hidden = self.embed(item_seq, segment_ids, user_ids, position_ids)
        causal = torch.ones(hidden.size(1), hidden.size(1), dtype=torch.bool, device=hidden.device).tril()
        visible = torch.cat((
            seen.unsqueeze(1).expand(-1, hidden.size(1), -1), causal & (item_seq != 0).unsqueeze(1),
        ), dim=2)
        # RecBole's additive mask values (SequentialRecommender.get_attention_mask), [B, 1, E, T + E].
        bias = torch.where(visible, 0.0, -10000.0).unsqueeze(1)
        for layer, earlier in zip(self.trm_encoder.layer, layer_inputs):
            hidden = layer.feed_forward(
                _attend(layer.multi_head_attention, hidden, torch.cat((earlier, hidden), dim=1), bias)
            )
        return hidden

    def embed(self, item_seq, segment_ids, user_ids=None, position_ids=None):
        """``[B, T]`` tokens -> ``[B, T, H]`` transformer inputs: item + position + segment (+ user)
        embeddings, normalised; positions default to the token indices."""
        if position_ids is None:
            position_ids = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        emb = (
            self.item_embedding(item_seq)
            + self.position_embedding(position_ids)
            + self.segment_embedding(segment_ids)
        )
        if self.user_embedding is not None:
            emb = emb + self.user_embedding(user_ids).unsqueeze(1)
        return self.dropout(self.LayerNorm(emb))

    def item_scores(self, hidden):
        """``[..., H] -> [..., n_items]``: dot product with the (tied) item table."""
        return hidden @ self.item_embedding.weight.t()


def _attend(attention, queries, seen, bias):
    """RecBole's ``MultiHeadAttention.forward`` for the ``queries`` ``[B, Q, H]`` alone, over the
    keys and values of ``seen`` ``[B, T, H]``; ``bias`` ``[B, 1, Q, T]`` is its additive mask."""
    heads, size = attention.num_attention_heads, attention.attention_head_size

    def by_head(x):  # [B, N, H] -> [B, heads, N, size]
        return x.view(x.size(0), x.size(1), heads, size).transpose(1, 2)

    query, key, value = by_head(attention.query(queries)), by_head(attention.key(seen)), by_head(attention.value(seen))
    scores = query @ key.transpose(-1, -2) / attention.sqrt_attention_head_size + bias
    context = attention.attn_dropout(attention.softmax(scores)) @ value
    context = context.transpose(1, 2).reshape(queries.shape)
    return attention.LayerNorm(attention.out_dropout(attention.dense(context)) + queries)
