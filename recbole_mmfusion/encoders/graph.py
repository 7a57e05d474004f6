r"""Graph encoder: GraphSAGE over the item-item graph, trained from scratch with layer-wise neighbour sampling.

Neighbour sampling is written here in plain torch rather than taken from PyG's ``NeighborLoader``:
that loader needs ``pyg-lib`` or ``torch-sparse`` for its sampler, and neither is a dependency of this
package. Only PyG's :class:`~torch_geometric.nn.conv.SAGEConv` operator is used, which runs on
torch alone.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import SAGEConv

logger = logging.getLogger(__name__)


def csr_from_edges(src, dst, n_nodes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compressed sparse rows of a directed edge list: the neighbours of node ``v`` are
    ``col[rowptr[v]:rowptr[v + 1]]`` (the ``dst`` of every edge leaving ``v``).

    Args:
        src, dst: edge endpoints, numpy arrays or tensors of node ids in ``[0, n_nodes)``.
        n_nodes (int): number of nodes (rows), isolated ones included.

    Returns:
        ``rowptr`` int64 ``[n_nodes + 1]`` and ``col`` int64 ``[E]``, edges sorted by ``src`` (stable,
        so each row keeps the input order of its edges).
    """
    src = torch.as_tensor(np.asarray(src) if not isinstance(src, torch.Tensor) else src).long().reshape(-1)
    dst = torch.as_tensor(np.asarray(dst) if not isinstance(dst, torch.Tensor) else dst).long().reshape(-1)
    if src.numel() != dst.numel():
        raise ValueError(f"src and dst differ in length ({src.numel()} vs {dst.numel()})")
    if src.numel() and (int(torch.minimum(src.min(), dst.min())) < 0
                        or int(torch.maximum(src.max(), dst.max())) >= n_nodes):
        raise ValueError(f"edge endpoints must lie in [0, {n_nodes})")
    order = torch.sort(src, stable=True).indices
    counts = torch.bincount(src, minlength=n_nodes)
    rowptr = torch.zeros(n_nodes + 1, dtype=torch.long, device=src.device)
    rowptr[1:] = torch.cumsum(counts, 0)
    return rowptr, dst[order].contiguous()


def sample_neighbors(rowptr: torch.Tensor, col: torch.Tensor, nodes: torch.Tensor, fanout: Optional[int],
                     generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``fanout`` distinct neighbours of each node, uniformly without replacement.

    A node of degree at most ``fanout`` keeps all its neighbours. The work is proportional to the summed
    degree of ``nodes``, never to the size of the graph, and has no Python loop over nodes: every candidate
    edge gets a uniform random key, edges are ordered by key within their node's segment (two stable
    sorts), and the first ``fanout`` of each segment are kept.

    Args:
        rowptr, col: the graph as compressed sparse rows (:func:`csr_from_edges`).
        nodes: int64 ``[B]`` node ids whose neighbours are wanted (expected unique).
        fanout (int, optional): neighbours per node; ``None`` or ``<= 0`` keeps all of them.
        generator (torch.Generator, optional): source of randomness (default: torch's global one).

    Returns:
        ``edge_src`` int64 ``[E']``, the global ids of the sampled neighbours, and ``edge_dst`` int64
        ``[E']``, for each of them the position in ``nodes`` of the node it neighbours. Edges are grouped
        by ``edge_dst`` in increasing order.
    """
    nodes = nodes.to(rowptr.device)
    start = rowptr[nodes]
    deg = rowptr[nodes + 1] - start
    total = int(deg.sum())
    seg = torch.repeat_interleave(torch.arange(nodes.numel(), device=rowptr.device), deg, output_size=total)
    seg_start = torch.cumsum(deg, 0) - deg  # first candidate of each node in the flat candidate list
    offset = torch.arange(total, device=rowptr.device) - seg_start[seg]  # rank of the edge inside its row
    if fanout is None or fanout <= 0 or total == 0 or int(deg.max()) <= fanout:
        return col[start[seg] + offset], seg
    keys = torch.rand(total, generator=generator, device=rowptr.device, dtype=torch.float64)
    # one sort on segment + a random fraction: segments stay in order and each is shuffled uniformly
    # (float64 holds the segment index exactly next to a fraction for any realistic batch)
    perm = torch.argsort(seg.to(torch.float64) + keys)
    seg, offset = seg[perm], offset[perm]
    rank = torch.arange(total, device=rowptr.device) - seg_start[seg]
    keep = rank < fanout
    seg, offset = seg[keep], offset[keep]
    return col[start[seg] + offset], seg


def _append_unique(known: torch.Tensor, candidates: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``known`` (unique ids) extended by the ids of ``candidates`` not yet in it, in order of first
    appearance, and the position of each candidate in the extended list. Sort-based, so its cost depends
    on the two lengths only (no scratch array over all nodes)."""
    both = torch.cat([known, candidates])
    uniq, inverse = torch.unique(both, return_inverse=True)
    position = torch.arange(both.numel(), device=both.device)
    first = torch.full((uniq.numel(),), both.numel(), dtype=torch.long, device=both.device)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    order = torch.argsort(first)  # known ids have first = 0..len(known)-1, so they keep their places
    local = torch.empty_like(order)
    local[order] = torch.arange(order.numel(), device=both.device)
    return uniq[order], local[inverse[known.numel():]]


class GraphEncoder(nn.Module):
    r"""GraphSAGE encoder of graph nodes (the items of the item-item graph) with trainable input vectors.

    Every node ``v`` starts from a learnt vector :math:`\mathbf{h}^{(0)}_v = \mathbf{e}_v`, or from zero
    where ``input_mask`` is ``False`` (nodes never seen in training: their output then comes only from
    their neighbours, the inductive case). Each layer is a mean-aggregating
    :class:`~torch_geometric.nn.conv.SAGEConv`:

    .. math::
        \mathbf{h}^{(l)}_v = \mathbf{W}^{(l)}_1 \mathbf{h}^{(l-1)}_v + \mathbf{W}^{(l)}_2 \cdot
        \mathrm{mean}_{u \in \mathcal{N}(v)} \mathbf{h}^{(l-1)}_u + \mathbf{b}^{(l)},

    with a ReLU between layers and none after the last. In training, :math:`\mathcal{N}(v)` is a uniform
    sample of at most ``fanouts[k]`` neighbours, drawn once per node at the hop ``k`` where the node is first
    reached from the batch (as PyG's ``NeighborLoader`` does), so a batch of ``B`` nodes touches at most
    :math:`B (1 + f_1 + f_1 f_2 + \dots)` nodes whatever the graph's size. In evaluation (or with
    ``fanouts=None``) every neighbour is used.

    Args:
        n_nodes (int): number of nodes.
        dim (int): input, hidden and output size (default: ``128``).
        n_layers (int): number of SAGE layers, i.e. hops (default: ``2``).
        fanouts (sequence of int, optional): neighbours sampled per node at each hop in training, from the
            batch outwards; one per layer; ``None`` keeps all neighbours (default: ``(10, 10)``).
        dropout (float): dropout on each layer's input features in training (default: ``0.0``).

    Shapes:
        - graph (:meth:`set_graph`): ``rowptr`` :math:`(N + 1)`, ``col`` :math:`(E)`, ``input_mask`` :math:`(N)`
        - input: node ids :math:`(B)` int64
        - output: :math:`(B, \text{dim})`; :meth:`full`: :math:`(N, \text{dim})`
    """

    def __init__(self, n_nodes: int, *, dim: int = 128, n_layers: int = 2,
                 fanouts: Optional[Sequence[int]] = (10, 10), dropout: float = 0.0):
        super().__init__()
        if n_nodes < 1:
            raise ValueError(f"n_nodes must be at least 1, not {n_nodes}")
        if dim < 1:
            raise ValueError(f"graph_dim must be at least 1, not {dim}")
        if n_layers < 1:
            raise ValueError(f"graph_layers must be at least 1, not {n_layers}")
        if fanouts is not None:
            fanouts = tuple(int(f) for f in fanouts)
            if len(fanouts) != n_layers:
                raise ValueError(f"graph_fanouts needs one entry per layer ({n_layers}), got {list(fanouts)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), not {dropout}")
        self.n_nodes = n_nodes
        self.dim = dim
        self.n_layers = n_layers
        self.fanouts = fanouts
        self.dropout = dropout

        self.embedding = nn.Embedding(n_nodes, dim)
        self.convs = nn.ModuleList(SAGEConv(dim, dim, aggr="mean") for _ in range(n_layers))
        # the graph is data, not a parameter: kept out of state_dict, moved with the module
        self.register_buffer("rowptr", None, persistent=False)
        self.register_buffer("col", None, persistent=False)
        self.register_buffer("input_mask", None, persistent=False)
        #: number of distinct nodes in the subgraph of the last :meth:`forward`
        self.last_subgraph_size = 0

        self.reset_parameters()

    def reset_parameters(self):
        # a fixed std rather than Xavier: Xavier would treat the table as an n_nodes x dim matrix and shrink
        # every vector as the graph grows, while each row is one node's input and should not depend on N
        nn.init.normal_(self.embedding.weight, std=0.1)
        for conv in self.convs:
            conv.reset_parameters()

    def set_graph(self, rowptr: torch.Tensor, col: torch.Tensor, input_mask: Optional[torch.Tensor] = None):
        """Use the graph ``rowptr``/``col`` (:func:`csr_from_edges`); ``input_mask`` (bool ``[n_nodes]``,
        default all ``True``) marks nodes whose own learnt vector is used."""
        rowptr = torch.as_tensor(rowptr).long()
        col = torch.as_tensor(col).long()
        if rowptr.numel() != self.n_nodes + 1:
            raise ValueError(f"rowptr must have n_nodes + 1 = {self.n_nodes + 1} entries, not {rowptr.numel()}")
        if int(rowptr[-1]) != col.numel():
            raise ValueError(f"rowptr ends at {int(rowptr[-1])} but col has {col.numel()} entries")
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= self.n_nodes):
            raise ValueError(f"col holds node ids outside [0, {self.n_nodes})")
        if input_mask is None:
            input_mask = torch.ones(self.n_nodes, dtype=torch.bool)
        input_mask = torch.as_tensor(input_mask).bool()
        if input_mask.shape != (self.n_nodes,):
            raise ValueError(f"input_mask must have shape ({self.n_nodes},), not {tuple(input_mask.shape)}")
        device = self.embedding.weight.device
        self.rowptr, self.col, self.input_mask = rowptr.to(device), col.to(device), input_mask.to(device)
        logger.debug("graph encoder: %d nodes, %d edges, %d without input vector",
                     self.n_nodes, col.numel(), int((~input_mask).sum()))

    def _inputs(self, nodes: torch.Tensor) -> torch.Tensor:
        x = self.embedding(nodes)
        # where, not a product: a masked node's input is exactly zero and its vector gets no gradient
        return torch.where(self.input_mask[nodes].unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))

    def _check_graph(self):
        if self.rowptr is None:
            raise RuntimeError("GraphEncoder has no graph: call set_graph(rowptr, col) first")

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        self._check_graph()
        nodes = nodes.to(self.rowptr.device).long()
        batch, batch_pos = torch.unique(nodes, return_inverse=True)  # repeated ids are encoded once
        fanouts = self.fanouts if self.training and self.fanouts is not None else (None,) * self.n_layers

        # sample outwards: hop k gives the nodes first reached at hop k their neighbours. ``subset`` holds the
        # global ids of the subgraph, in order of discovery, so the nodes within k hops are a prefix of it
        subset, frontier = batch, batch
        frontier_start = 0
        prefix = [batch.numel()]  # prefix[k]: number of nodes within k hops
        edge_src, edge_dst = [], []
        for fanout in fanouts:
            src_global, dst_pos = sample_neighbors(self.rowptr, self.col, frontier, fanout)
            subset, src_local = _append_unique(subset, src_global)
            edge_src.append(src_local)
            edge_dst.append(dst_pos + frontier_start)
            frontier_start = prefix[-1]
            frontier = subset[frontier_start:]
            prefix.append(subset.numel())
        self.last_subgraph_size = subset.numel()
        edge_prefix = np.cumsum([e.numel() for e in edge_src]).tolist()  # edges whose target is within k hops
        edge_index = torch.stack([torch.cat(edge_src), torch.cat(edge_dst)])  # (2, E'): neighbour -> node

        # aggregate inwards: the layer l-th from the output maps the nodes within l + 1 hops to those within
        # l hops. Targets are a prefix of the sources, which lines up SAGEConv's root term x[1] = x[0][:n_dst]
        x = self._inputs(subset)
        for layer, conv in enumerate(self.convs):
            hops = self.n_layers - 1 - layer
            n_src, n_dst = prefix[hops + 1], prefix[hops]
            x = F.dropout(x[:n_src], p=self.dropout, training=self.training)
            x = conv((x, x[:n_dst]), edge_index[:, :edge_prefix[hops]], size=(n_src, n_dst))
            if layer < self.n_layers - 1:
                x = x.relu()
        return x[batch_pos]  # (B, dim)

    def full(self) -> torch.Tensor:
        """All nodes with full neighbourhoods, one pass over the graph: ``[n_nodes, dim]``."""
        self._check_graph()
        deg = self.rowptr[1:] - self.rowptr[:-1]
        dst = torch.repeat_interleave(torch.arange(self.n_nodes, device=deg.device), deg, output_size=self.col.numel())
        edge_index = torch.stack([self.col, dst])  # (2, E): neighbour -> node
        x = self._inputs(torch.arange(self.n_nodes, device=deg.device))
        for layer, conv in enumerate(self.convs):
            x = conv(F.dropout(x, p=self.dropout, training=self.training), edge_index)
            if layer < self.n_layers - 1:
                x = x.relu()
        return x

    def extra_repr(self) -> str:
        return f"n_nodes={self.n_nodes}, dim={self.dim}, fanouts={self.fanouts}, dropout={self.dropout}"
