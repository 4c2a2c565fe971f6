//! The neuron zoo, built with the builder API.
