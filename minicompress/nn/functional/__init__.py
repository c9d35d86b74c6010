"""Functional forward/backward pairs: the math of every op, written once.

``xxx_forward(x, ...) -> (y, cache)`` and ``xxx_backward(dy, cache) -> gradients``, side by side per file:
linear, conv (im2col), pool, norm (batch, layer, group norm), activation, misc (flatten, dropout, embedding),
attention (scaled dot-product),
rnn (one step of the RNN, LSTM and GRU cells).
"""
from .activation import (gelu_backward, gelu_forward, leaky_relu_backward, leaky_relu_forward,
                         log_softmax_backward, log_softmax_forward, relu_backward, relu_forward,
                         sigmoid_backward, sigmoid_forward, softmax_backward, softmax_forward, tanh_backward,
                         tanh_forward)
from .conv import col2im, conv1d_backward, conv1d_forward, conv2d_backward, conv2d_forward, im2col, im2col_batch
from .attention import scaled_dot_product_attention
from .linear import linear_backward, linear_forward
from .misc import dropout_backward, dropout_forward, flatten_backward, flatten_forward
from .norm import batch_norm_backward, batch_norm_forward
from .rnn import (gru_cell_backward, gru_cell_forward, lstm_cell_backward, lstm_cell_forward,
                  rnn_cell_backward, rnn_cell_forward)
from .pool import (adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward, avg_pool2d_backward,
                   avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward)
