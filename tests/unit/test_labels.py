"""Pure functions of effnet.labels that the reports and figures share."""

from effnet.labels import imagenet_labels, short_label


def test_short_label_keeps_the_first_name() -> None:
    # classes.txt line 282 (index 281): "tabby, tabby cat"
    assert imagenet_labels()[281].label.startswith("tabby, ")
    assert short_label(imagenet_labels()[281].label) == "tabby"


def test_short_label_cuts_long_names_with_an_ellipsis() -> None:
    name = "a" * 50
    cut = short_label(name, width=10)
    assert cut == "a" * 9 + "…"
    assert len(cut) == 10
    assert short_label("a" * 10, width=10) == "a" * 10  # exactly the width: not cut
