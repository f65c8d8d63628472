import unittest

from search import index_of


class SearchTest(unittest.TestCase):
    def test_found(self):
        items = [1, 3, 5, 7, 9]
        for i, x in enumerate(items):
            self.assertEqual(index_of(items, x), i)

    def test_missing(self):
        self.assertEqual(index_of([1, 3, 5], 4), -1)
        self.assertEqual(index_of([], 1), -1)

    def test_single(self):
        self.assertEqual(index_of([2], 2), 0)


if __name__ == "__main__":
    unittest.main()
