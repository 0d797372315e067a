# quadra_set_warnings(target): the project's warning set, applied to its own targets only
# (through BUILD_INTERFACE, so nothing leaks into an installed package's users).
function(quadra_set_warnings target)
  set(flags -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
            -Woverloaded-virtual -Wcast-align -Wimplicit-fallthrough)
  if(QUADRA_WERROR)
    list(APPEND flags -Werror)
  endif()
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    return()
  endif()
  target_compile_options(${target} PRIVATE $<BUILD_INTERFACE:${flags}>)
endfunction()
