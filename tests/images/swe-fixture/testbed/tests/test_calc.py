from calc import add, clamp, mul


def test_add():
    assert add(2, 3) == 5


def test_mul():
    assert mul(2, 3) == 6


def test_clamp_low():
    assert clamp(-5, 0, 10) == 0
