// io::remove_tree: what std::filesystem::remove_all does (a tree, a file, a missing path), links
// removed and not followed, and a clear error naming the entry it cannot remove.
#include "io/remove_tree.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace reach::io {
namespace {

namespace fs = std::filesystem;

TEST(RemoveTree, RemovesATreeAFileAndIgnoresAMissingPath) {
  const fs::path root = fs::path(testing::TempDir()) / "reach_remove_tree";
  fs::remove(root / "link");
  fs::create_directories(root / "a" / "b");
  std::ofstream(root / "a" / "b" / "f.txt") << "x";
  std::ofstream(root / "g.txt") << "y";
  const fs::path outside = fs::path(testing::TempDir()) / "reach_remove_tree_outside.txt";
  std::ofstream(outside) << "kept";
  fs::create_symlink(outside, root / "link");
  EXPECT_EQ(remove_tree(root / "g.txt"), 1u);
  EXPECT_FALSE(fs::exists(root / "g.txt"));
  EXPECT_EQ(remove_tree(root), 5u);  // f.txt, b, a, link, root
  EXPECT_FALSE(fs::exists(root));
  EXPECT_TRUE(fs::exists(outside));  // the link's target stays
  EXPECT_EQ(remove_tree(root), 0u);
  fs::remove(outside);
}

TEST(RemoveTree, NamesTheEntryItCannotRemove) {
  if (geteuid() == 0) GTEST_SKIP() << "root removes read-only directories' entries";
  const fs::path root = fs::path(testing::TempDir()) / "reach_remove_tree_locked";
  fs::create_directories(root / "inner");
  std::ofstream(root / "inner" / "f.txt") << "x";
  fs::permissions(root / "inner", fs::perms::owner_read | fs::perms::owner_exec);
  try {
    remove_tree(root);
    ADD_FAILURE() << "removed a file of a read-only directory";
  } catch (const fs::filesystem_error& e) {
    EXPECT_NE(std::string(e.what()).find("f.txt"), std::string::npos) << e.what();
  }
  fs::permissions(root / "inner", fs::perms::owner_all);
  remove_tree(root);
}

}  // namespace
}  // namespace reach::io
