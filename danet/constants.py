"""Values every part of the project agrees on."""

# The label of pixels that count nowhere: no loss, no metric (void / unlabelled; Cityscapes' and the seed's
# convention). Padding in the transforms writes it too.
IGNORE_INDEX = 255
