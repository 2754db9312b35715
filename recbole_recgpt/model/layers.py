"""The GPT backbone shared by the trained model and its frozen prompt writer."""

import torch
from torch import nn

from recbole.model.layers import TransformerEncoder


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
        if position_ids is None:
            position_ids = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        emb = (
            self.item_embedding(item_seq)
            + self.position_embedding(position_ids)
            + self.segment_embedding(segment_ids)
        )
        if self.user_embedding is not None:
            emb = emb + self.user_embedding(user_ids).unsqueeze(1)
        emb = self.dropout(self.LayerNorm(emb))
        return self.trm_encoder(emb, attention_mask, output_all_encoded_layers=False)[-1]

    def item_scores(self, hidden):
        """``[..., H] -> [..., n_items]``: dot product with the (tied) item table."""
        return hidden @ self.item_embedding.weight.t()
