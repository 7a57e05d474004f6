"""The three MMFusion encoders, each trained from scratch: ``text`` (DistilBERT), ``image`` (ResNet-50) and
``graph`` (GraphSAGE over the item-item graph). Import them from their modules."""
