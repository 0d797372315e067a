#pragma once
/// \file
/// Everything a plugin needs: include this one header.
#include "quadra/sdk/plugin.hpp"
