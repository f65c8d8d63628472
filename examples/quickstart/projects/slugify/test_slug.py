import unittest

from slug import slugify


class SlugTest(unittest.TestCase):
    def test_simple(self):
        self.assertEqual(slugify("Hello"), "hello")

    def test_collapses_and_strips(self):
        self.assertEqual(slugify("Hello,  World!"), "hello-world")
        self.assertEqual(slugify("  Rust & Docker -- 2026 "), "rust-docker-2026")


if __name__ == "__main__":
    unittest.main()
