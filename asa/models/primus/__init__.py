"""Primus (dynamic-network-architectures' 3D transformer, nnssl's published one) as an asa family, in this folder
alone: the segmenter ``primus`` (`network`), its masked twin ``primus_pretrain`` (`masked`: nnssl's token masking
with asa's reconstruction objective) and the family's declaration (`family`)."""
