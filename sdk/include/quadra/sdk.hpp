#pragma once
/// \file
/// Everything a plugin needs: include this one header.
#include "quadra/sdk/format.hpp"
#include "quadra/sdk/kronecker.hpp"
#include "quadra/sdk/plugin.hpp"
#include "quadra/sdk/state.hpp"
